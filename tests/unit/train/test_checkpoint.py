"""Checkpoints: atomic writes, verification (truncation, corruption, no record), fallback, pruning, RNG."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from softclip import checkpoint as ckpt


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {
        "step": step,
        "model": {"w": torch.randn(64, 64, generator=g)},
        "meta": [1, 2.5, None, "x", (3, 4)],
    }


def test_roundtrip_with_weights_only(tmp_path: Path) -> None:
    path = ckpt.checkpoint_path(tmp_path, 7)
    record = ckpt.save_checkpoint(_state(7), path)
    assert path.name == "step_00000007.pt"
    assert record["step"] == 7 and record["bytes"] == path.stat().st_size
    assert json.loads(ckpt.record_path(path).read_text())["sha256"] == record["sha256"]
    loaded = ckpt.load_checkpoint(path)
    assert loaded["model"]["w"].equal(_state(7)["model"]["w"])
    assert loaded["meta"] == [1, 2.5, None, "x", (3, 4)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_failed_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint(_state(1), path)
    before = path.read_bytes()

    def broken_save(obj, f):  # writes part of the data, then dies (disk full, kill, ...)
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(_state(2), path)
    assert path.read_bytes() == before
    ckpt.verify_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001.json", "step_00000001.pt"]


def test_truncated_corrupt_and_unrecorded_checkpoints_are_detected(tmp_path: Path) -> None:
    paths = [ckpt.checkpoint_path(tmp_path, s) for s in (1, 2, 3)]
    for s, p in zip((1, 2, 3), paths, strict=True):
        ckpt.save_checkpoint(_state(s), p)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        ckpt.load_checkpoint(paths[2])
    raw = bytearray(paths[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte, same size
    paths[1].write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="SHA-256"):
        ckpt.verify_checkpoint(paths[1])
    ckpt.record_path(paths[0]).unlink()
    with pytest.raises(ckpt.CheckpointError, match="record"):
        ckpt.verify_checkpoint(paths[0])
    # without the record check, torch itself refuses the truncated archive
    with pytest.raises(ckpt.CheckpointError, match="cannot be loaded"):
        ckpt.load_checkpoint(paths[2], verify=False)


def test_latest_valid_falls_back_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for s in (2, 4, 6):
        ckpt.save_checkpoint(_state(s), ckpt.checkpoint_path(tmp_path, s))
    newest = ckpt.checkpoint_path(tmp_path, 6)
    newest.write_bytes(newest.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="softclip.train"):
        assert ckpt.latest_valid(tmp_path) == ckpt.checkpoint_path(tmp_path, 4)
    assert "step_00000006.pt" in caplog.text and "falling back" in caplog.text
    assert ckpt.latest_valid(tmp_path / "missing") is None


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for s in (1, 2, 10, 3):
        ckpt.save_checkpoint(_state(s), ckpt.checkpoint_path(tmp_path, s))
    ckpt.save_checkpoint(_state(99), tmp_path / ckpt.BEST_NAME)
    removed = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == ["step_00000001.pt", "step_00000002.pt"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003.pt", "step_00000010.pt"]
    assert not ckpt.record_path(ckpt.checkpoint_path(tmp_path, 1)).exists()
    assert (tmp_path / ckpt.BEST_NAME).exists()


def test_copy_checkpoint_verifies(tmp_path: Path) -> None:
    src = ckpt.checkpoint_path(tmp_path, 5)
    ckpt.save_checkpoint(_state(5), src)
    dst = tmp_path / ckpt.BEST_NAME
    ckpt.copy_checkpoint(src, dst)
    assert ckpt.verify_checkpoint(dst)["file"] == "best.pt"
    assert ckpt.load_checkpoint(dst)["step"] == 5


def test_rng_capture_restore_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy state
    path = tmp_path / "rng.pt"
    ckpt.save_checkpoint({"step": 0, "rng": ckpt.capture_rng()}, path)
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng(ckpt.load_checkpoint(path)["rng"])
    got = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and got[3].equal(expected[3])
