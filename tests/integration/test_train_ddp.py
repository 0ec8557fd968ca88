"""DDP: two CPU processes under torchrun (gloo) train like one process on the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softclip.checkpoint import checkpoint_path, load_checkpoint
from softclip.train.metrics import read_metrics

from .test_train_resume import ENTRY, REPO, smoke_data, write_config  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
STEPS = 3


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.parametrize("accum", [1, 2])
def test_two_ranks_match_one_process(smoke_data: Path, tmp_path: Path, accum: int) -> None:  # noqa: F811
    config = write_config(tmp_path / "cfg.yaml", smoke_data, steps=STEPS, ckpt_every=STEPS)
    overrides = [f"optim.accum_steps={accum}", "data.batch_size=32"]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(ENTRY), str(config), "--run-dir", str(ddp), *overrides])
    _run([sys.executable, str(ENTRY), str(config), "--run-dir", str(single), "--merge-ranks", "2", *overrides])

    a, b = read_metrics(ddp / "metrics.jsonl"), read_metrics(single / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "nce_loss", "soft_loss", "re_loss", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-5), (ra["step"], key)
    final = checkpoint_path("checkpoints", STEPS)
    wa, wb = load_checkpoint(ddp / final)["model"], load_checkpoint(single / final)["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
