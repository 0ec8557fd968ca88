"""Exact resume: a ``softclip train`` process killed with SIGKILL after its first checkpoint, then resumed,
ends with the same weights (bit for bit) and the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from softclip.checkpoint import checkpoint_path, load_checkpoint, record_path
from softclip.data.synth import SynthConfig, generate
from softclip.data.synth.roots import SYNTH_DATA_SEED
from softclip.train.metrics import TIMING_KEYS, read_metrics

pytestmark = pytest.mark.integration

ENTRY = Path(__file__).with_name("train_entry.py")
REPO = Path(__file__).resolve().parents[2]
STEPS, CKPT_EVERY = 12, 4


def write_config(path: Path, data_root: Path, loss: dict | None = None, **train: object) -> Path:
    """A smoke-sized run config: tiny-vit-32 on the smoke synthetic set, batch 16, one thread."""
    cfg = {
        "loss": loss or {},
        "name": "it",
        "seed": 3,
        "model": {"name": "tiny-vit-32"},
        "data": {"source": "synth", "root": str(data_root), "batch_size": 16, "shuffle_buffer": 64,
                 "synth": SynthConfig.preset("smoke").model_dump(mode="json")},  # fmt: skip
        "optim": {"warmup_steps": 3},
        "train": {"steps": STEPS, "log_every": 1, "ckpt_every": CKPT_EVERY, "keep_checkpoints": 2, "threads": 1,
                  "device": "cpu", **train},  # fmt: skip
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "smoke"
    generate(root, SynthConfig.preset("smoke"), seed=SYNTH_DATA_SEED)
    return root


def command(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ENTRY), str(config), "--run-dir", str(run_dir), *extra]


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def untimed(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(path)]


# the default SoftCLIP objective, and the EMA teacher (whose weights must resume too) with the sigmoid loss's bias
LOSSES = {
    "softclip": {},
    "momentum_sigmoid": {"target": "momentum", "contrastive": "sigmoid", "re_weight": 0.0, "momentum": 0.9,
                         "image_source": "image", "text_source": "text"},  # fmt: skip
}


@pytest.mark.parametrize("loss", LOSSES.values(), ids=LOSSES.keys())
def test_sigkill_then_resume_is_bit_exact(smoke_data: Path, tmp_path: Path, loss: dict) -> None:
    config = write_config(tmp_path / "cfg.yaml", smoke_data, loss=loss)
    straight = tmp_path / "straight"
    run_ok(command(config, straight))

    killed = tmp_path / "killed"
    first = record_path(checkpoint_path(killed / "checkpoints", CKPT_EVERY))
    proc = subprocess.Popen(command(config, killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "done.json").exists()

    run_ok(command(config, killed))
    final = checkpoint_path("checkpoints", STEPS)
    a, b = load_checkpoint(straight / final)["model"], load_checkpoint(killed / final)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    if loss.get("target") == "momentum":  # the teacher is in the checkpoint, and it lags the student
        teacher = {k for k in a if k.startswith("teacher.")}
        assert teacher and any(not torch.equal(a[k], a["clip." + k[len("teacher."):]]) for k in teacher)
    assert untimed(killed / "metrics.jsonl") == untimed(straight / "metrics.jsonl")
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == list(range(1, STEPS + 1))
    # the step-averaged target precision (SynthScenes, soft targets) averages each log step once after a resume
    targets = [json.loads((d / "eval" / "target.json").read_text())["metrics"] for d in (straight, killed)]
    assert targets[0] == targets[1] and 0.0 <= targets[0]["precision"] <= 1.0
    meta = json.loads((killed / "meta.json").read_text())
    assert [r["step"] for r in meta["resumes"]][0] >= CKPT_EVERY

    again = subprocess.run(command(config, killed), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "finished run" in again.stderr
