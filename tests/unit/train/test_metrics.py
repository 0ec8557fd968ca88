"""metrics.jsonl writing, strict JSON for non-finite values, torn lines and truncation on resume."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from softclip.train.metrics import MetricsWriter, read_metrics, truncate_metrics


def test_write_plain_json_and_nulls(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    w.write({"kind": "train", "step": 1, "loss": torch.tensor(1.5), "bad": float("nan"), "n": 3})
    w.close()
    line = path.read_text().strip()
    assert json.loads(line) == {"kind": "train", "step": 1, "loss": 1.5, "bad": None, "n": 3}
    assert "NaN" not in line


def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path, enabled=False)
    w.write({"kind": "train", "step": 1})
    w.close()
    assert not path.exists()


def test_truncate_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"kind": "tra')  # a writer killed mid-line
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert truncate_metrics(path, 2) == 2
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert path.read_text().endswith("\n")
    assert truncate_metrics(tmp_path / "absent.jsonl", 3) == 0


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    w = MetricsWriter(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    w.write({"kind": "train", "step": 1, "loss": 0.5})  # works whether or not tensorboard is installed
    w.close()
    assert read_metrics(tmp_path / "m.jsonl")[0]["loss"] == 0.5
