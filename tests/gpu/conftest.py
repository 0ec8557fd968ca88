"""The GPU tier (``pytest -m gpu tests/gpu``; ``bash benchmarks/gpu_check.sh`` runs it): training with bf16 autocast,
exact resume, evaluation embeddings and search, and the objective, on CUDA against the CPU.

Without CUDA every test is skipped, saying why, unless ``SOFTCLIP_GPU_DRY_RUN=1``: then the same tests run on the CPU
(one thread, tiny sizes), which checks the harness itself on a machine without a GPU (``gpu_check.sh --dry-run``).

Measured numbers (differences, tolerances, which FAISS ran) go into the junit XML as properties and into
``$SOFTCLIP_GPU_OUT/gpu_tests.json`` (default: the session's temporary folder).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# cuBLAS is deterministic (for a fixed configuration) only with a fixed workspace; it reads this at its first use
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "ablations" / "base.yaml"
DRY_RUN = os.environ.get("SOFTCLIP_GPU_DRY_RUN") == "1"
HAS_CUDA = torch.cuda.is_available()
ON_CUDA = HAS_CUDA and not DRY_RUN
SKIP_REASON = (
    "needs CUDA: torch.cuda.is_available() is False here (set SOFTCLIP_GPU_DRY_RUN=1 to run these tests on the CPU "
    "at tiny sizes, as benchmarks/gpu_check.sh --dry-run does)"
)
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA or DRY_RUN:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if ON_CUDA else "cpu (dry run)" if DRY_RUN else "cpu"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """cuda, or the CPU in a dry run."""
    return torch.device("cuda" if ON_CUDA else "cpu")


@pytest.fixture(scope="session", autouse=True)
def _threads() -> Iterator[None]:
    """One torch thread in a dry run (a shared machine); torch's default on the GPU machine."""
    old = torch.get_num_threads()
    if DRY_RUN:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Measurements by test; written to ``$SOFTCLIP_GPU_OUT/gpu_tests.json`` at the end of the session."""
    data: dict[str, Any] = {
        "dry_run": DRY_RUN,
        "device": device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tests": {},
    }
    start = time.perf_counter()
    yield data
    data["elapsed_s"] = round(time.perf_counter() - start, 2)
    out = Path(os.environ.get("SOFTCLIP_GPU_OUT") or tmp_path_factory.getbasetemp())
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_tests.json").write_text(json.dumps(data, indent=1, default=str) + "\n")


@pytest.fixture
def record(results: dict[str, Any], record_property: Callable, request: pytest.FixtureRequest) -> Callable:
    """``record(key, value)``: keep a measurement of this test (JSON file and junit property) and print it."""
    mine = results["tests"].setdefault(request.node.name, {})

    def put(key: str, value: Any) -> None:
        mine[key] = value
        record_property(key, value)
        print(f"{request.node.name}: {key} = {value}")

    return put


def run_config(profile: str, data: Any | None = None, overrides: tuple[str, ...] = ()) -> Any:
    """``ablations/base.yaml`` at ``profile`` on this tier's device (fp32 unless overridden), via ``load_config``.

    ``data``: a ``data`` section to use instead of the profile's (the quick profile trains on the smoke data here,
    so the session generates one small SynthScenes set).
    """
    from softclip.config import load_config

    device = "cuda" if ON_CUDA else "cpu"
    threads = 1 if DRY_RUN else 0
    cfg = load_config(
        BASE,
        profile=profile,
        overrides=[f"train.device={device}", f"train.threads={threads}", "train.precision=fp32", *overrides],
    )
    if data is not None:
        cfg.data = data.model_copy(update={"batch_size": cfg.data.batch_size})
    return cfg


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The smoke profile's ``data`` section, its SynthScenes generated once under the session's temporary folder."""
    from softclip.data.synth.roots import ensure as ensure_synth_data

    root = tmp_path_factory.mktemp("synth") / "smoke"
    cfg = run_config("smoke", overrides=(f"data.root={root}",))
    ensure_synth_data(cfg.data)
    return cfg.data


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, smoke_data: Any) -> Callable[..., Path]:
    """``trained(profile, precision, steps)``: a finished run folder (trained once per argument set)."""
    from softclip.train import train

    cache: dict[tuple, Path] = {}

    def get(profile: str = "smoke", precision: str = "fp32", steps: int = 10) -> Path:
        key = (profile, precision, steps)
        if key not in cache:
            overrides = (f"train.precision={precision}", f"train.steps={steps}", "train.log_every=1",
                         f"train.ckpt_every={steps}", "train.keep_checkpoints=1")  # fmt: skip
            cfg = run_config(profile, smoke_data, overrides)
            folder = tmp_path_factory.mktemp(f"run-{profile}-{precision}")
            cache[key] = train(cfg, folder, overwrite=True)
        return cache[key]

    return get
