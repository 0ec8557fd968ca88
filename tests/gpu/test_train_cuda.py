"""Training on CUDA through ``softclip.train.train``: bf16 autocast against fp32, and exact resume."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from softclip import checkpoint as ckpt
from softclip.train.metrics import TIMING_KEYS, read_metrics

from .conftest import DRY_RUN, ON_CUDA, run_config

pytestmark = pytest.mark.gpu

BF16_STEPS = 10
BF16_RTOL = 2e-2
# the dry run keeps to the smallest; SOFTCLIP_GPU_PROFILES=smoke,quick overrides
PROFILES = os.environ.get("SOFTCLIP_GPU_PROFILES", "smoke,quick" if ON_CUDA else "smoke").split(",")
RESUME_STEPS = 8  # straight, vs interrupted after N/2 + 1 and resumed from the periodic checkpoint at N/2
NOISE_FACTOR = 10.0


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("profile", PROFILES)
def test_bf16_losses_track_fp32(trained: Callable[..., Path], record: Callable, profile: str) -> None:
    """bf16 autocast (``train.precision=bf16``) follows fp32 over the first 10 steps of the same run.

    Same config, seed and data; the loss of every step is finite and within ``BF16_RTOL`` = 2e-2 relative of the
    fp32 loss of the same step. The objective itself runs in fp32 under autocast (only the towers' matrix products
    are bf16), so the difference comes from bf16 embeddings and grows slowly as the two runs' weights drift apart. A
    dry run on the CPU (bf16 autocast there too) measured 8.9e-4 for the smoke profile, and the loss moves by ~25%
    over these steps, so 2e-2 leaves a 20x margin and still catches a step computed in bf16 that should not be (the
    objective's logits in bf16 are off by ~1e-2 relative at step 1 already). The quick profile (tiny-vit-32-p8,
    batch 64) runs on CUDA only, on the smoke data.
    """
    fp32 = trained(profile, "fp32", BF16_STEPS)
    bf16 = trained(profile, "bf16", BF16_STEPS)
    meta = json.loads((bf16 / "meta.json").read_text())
    a, b = train_losses(fp32), train_losses(bf16)
    assert len(a) == len(b) == BF16_STEPS
    assert all(math.isfinite(x) for x in a + b), (a, b)
    rel = [abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)]
    record("precision_recorded", meta.get("precision"))
    record("losses_fp32", [round(x, 6) for x in a])
    record("losses_bf16", [round(x, 6) for x in b])
    record("max_rel_diff", max(rel))
    record("first_step_rel_diff", rel[0])
    record("tolerance", BF16_RTOL)
    assert max(rel) <= BF16_RTOL, f"bf16 vs fp32 loss, max relative difference {max(rel):.3g} > {BF16_RTOL}"


class InterruptAt:
    """An ``evaluate`` callback that presses Ctrl-C at one step (the trainer checkpoints and stops)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        if step == self.step:
            raise KeyboardInterrupt
        return {}


@pytest.fixture
def deterministic() -> Iterator[list[str]]:
    """Deterministic algorithms (warn-only: the warnings name the ops that have none), cuDNN without autotuning."""
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen: list[str] = []
        yield seen
        seen.extend(sorted({str(w.message)[:200] for w in caught if "determinis" in str(w.message)}))
    torch.use_deterministic_algorithms(old[0], warn_only=old[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[2], old[3]


def _untimed(run_dir: Path) -> list[dict[str, Any]]:
    """The training records of ``metrics.jsonl`` without their timing keys (the hook's eval records left out)."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS}
            for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]  # fmt: skip


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(((x.double() - b[k].double()).abs().max().item() if x.is_floating_point() else
                float(not torch.equal(x, b[k]))) for k, x in a.items())  # fmt: skip


def _patched_restore_rng(state: dict[str, Any]) -> None:
    """``checkpoint.restore_rng`` with every state moved to the CPU first (the fix proposed for CUDA resume)."""
    def cpu(x: Any) -> Any:
        if torch.is_tensor(x):
            return x.cpu()
        if isinstance(x, dict):
            return {k: cpu(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return type(x)(cpu(v) for v in x)
        return x

    _ORIGINAL_RESTORE(cpu(state))


_ORIGINAL_RESTORE = ckpt.restore_rng


def test_resume_is_exact(tmp_path: Path, smoke_data: Any, record: Callable, deterministic: list[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """N steps straight vs interrupted after step N/2 + 1 and resumed from the periodic checkpoint at step N/2.

    The run is the smoke profile (SoftCLIP defaults: ROI/tag self-similarity targets, learned ROI aggregator) for
    N = 8 steps, checkpoints every N/2, under ``torch.use_deterministic_algorithms(True, warn_only=True)`` and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8``. The interruption is the trainer's own Ctrl-C path (a KeyboardInterrupt from
    the evaluation hook at step N/2 + 1); its request checkpoint is removed so that the resume starts from the
    periodic one. A second straight run measures the run-to-run noise: when the two straight runs are bit-identical
    (deterministic kernels), the resumed weights must equal them bit for bit (``torch.equal``) and the metrics must
    match; otherwise the resumed run's max |difference| must stay within 10x the run-to-run one.

    If the resume fails in ``checkpoint.restore_rng`` (a checkpoint loaded with ``map_location=cuda`` gives CUDA RNG
    tensors that numpy / ``torch.set_rng_state`` refuse), the test repeats the resume with the states moved to the
    CPU, reports the comparison, and fails naming the library fix.
    """
    from softclip.train import train
    from softclip.train.errors import TrainingInterrupted

    half = RESUME_STEPS // 2
    overrides = (f"train.steps={RESUME_STEPS}", f"train.ckpt_every={half}", "train.eval_every=1",
                 "train.log_every=1", "train.keep_checkpoints=3")  # fmt: skip
    cfg = run_config("smoke", smoke_data, overrides)
    straight, again, resumed = (tmp_path / n for n in ("straight", "straight2", "resumed"))
    train(cfg, straight)
    train(cfg, again)
    with pytest.raises(TrainingInterrupted):
        train(cfg, resumed, evaluate=InterruptAt(half + 1))
    request = ckpt.checkpoint_path(resumed / "checkpoints", half + 1)
    assert request.is_file(), "the interrupted run wrote no checkpoint on Ctrl-C"
    request.unlink()
    ckpt.record_path(request).unlink(missing_ok=True)
    assert ckpt.latest_valid(resumed / "checkpoints") == ckpt.checkpoint_path(resumed / "checkpoints", half)
    library_error = None
    try:
        train(cfg, resumed)
    except (TypeError, RuntimeError) as err:  # restore_rng on CUDA tensors (see the docstring)
        library_error = f"{type(err).__name__}: {err}"
        record("library_error", library_error)
        monkeypatch.setattr(ckpt, "restore_rng", _patched_restore_rng)
        train(cfg, resumed)
    final = ckpt.checkpoint_path("checkpoints", RESUME_STEPS)
    a, b, c = (ckpt.load_checkpoint(d / final)["model"] for d in (straight, again, resumed))
    noise, diff = _max_abs_diff(a, b), _max_abs_diff(a, c)
    meta = json.loads((resumed / "meta.json").read_text())
    deterministic_runs = noise == 0.0
    record("resumed_from_step", [r.get("step") for r in meta.get("resumes", [])])
    record("run_to_run_max_abs_diff", noise)
    record("resume_max_abs_diff", diff)
    record("bit_identical", all(torch.equal(a[k], c[k]) for k in a))
    record("nondeterministic_op_warnings", list(deterministic))
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl") if r["kind"] == "train"] == list(
        range(1, RESUME_STEPS + 1)
    )
    if deterministic_runs:
        bad = [k for k in a if not torch.equal(a[k], c[k])]
        assert not bad, f"resumed weights differ from the straight run in {len(bad)} tensors, e.g. {bad[:5]}"
        assert _untimed(resumed) == _untimed(straight)
    else:
        assert diff <= NOISE_FACTOR * noise, f"resume max |diff| {diff:.3g} > {NOISE_FACTOR} x run-to-run {noise:.3g}"
    if library_error is not None:
        pytest.fail(
            f"resume on {'CUDA' if ON_CUDA else 'the CPU'} failed in the library ({library_error}); with the RNG "
            f"states moved to the CPU first (the proposed checkpoint.restore_rng fix) it is "
            f"{'bit-exact' if diff == 0 else f'off by {diff:.3g}'}"
        )
    if DRY_RUN:
        assert deterministic_runs, "two straight CPU runs differ"
