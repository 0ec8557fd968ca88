"""Preemption: save_now() in the middle of a step saves the last step boundary, and resuming from it is exact
(submitit's checkpoint handler, ResumableCall.checkpoint, calls it; tests/unit/launch/test_launchers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softclip import checkpoint as ckpt
from softclip.objective import SoftCLIPObjective
from softclip.train import save_now, train
from softclip.train.metrics import TIMING_KEYS, read_metrics

from .conftest import smoke_config


class Preempted(Exception):
    """Stands in for the process exit that follows submitit's checkpoint handler."""


def test_save_now_mid_step_resumes_exactly(
    smoke_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = smoke_config(smoke_data, {"train": {"steps": 4, "ckpt_every": 100}})
    straight = train(cfg, tmp_path / "straight")
    assert save_now() is None  # nothing is training now

    original, calls = SoftCLIPObjective.forward, {"n": 0}

    def forward(self, *args, **kwargs):  # the preemption signal lands inside step 3's forward pass
        calls["n"] += 1
        if calls["n"] == 3:
            assert save_now() == ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 2)
            raise Preempted
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SoftCLIPObjective, "forward", forward)
    with pytest.raises(Preempted):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 2))["step"] == 2
    train(cfg, tmp_path / "run")
    final = Path("checkpoints") / "step_00000004.pt"
    a, b = (
        ckpt.load_checkpoint(straight / final)["model"],
        ckpt.load_checkpoint(tmp_path / "run" / final)["model"],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)

    def untimed(run: Path) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(run / "metrics.jsonl")
        ]

    assert untimed(tmp_path / "run") == untimed(straight)
