"""Checks shared by the rehearsal's local (tests/integration/test_rehearsal.py) and SLURM
(tests/slurm/test_slurm_rehearsal.py) tests of ``softclip reproduce --profile rehearsal``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from softclip.evaluation.suite import read_suite

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {"clip": "RN50", "softclip": "RN50", "clip_vitb32": "ViT-B-32", "softclip_vitb32": "ViT-B-32"}


def check_rehearsal(cwd: Path, world_size: int, variants: dict[str, str] = VARIANTS) -> None:
    """Every run of ``variants`` trained 3 steps in ``world_size`` processes and scored every paper benchmark;
    the report is titled a rehearsal. Shared with tests/slurm/test_slurm_rehearsal.py."""
    benchmarks = list(read_suite(ROOT / "eval" / "paper.yaml")[0].benchmarks)
    assert len(benchmarks) == 6
    manifest = json.loads((cwd / "runs" / "ablations" / "rehearsal" / "main" / "manifest.json").read_text())
    runs = {r["variant"]: Path(r["run_dir"]) for r in manifest["runs"]}
    assert set(runs) == set(variants)
    for variant, run in runs.items():
        config = (run / "config.yaml").read_text()
        assert f"name: {variants[variant]}" in config and "kmax: 50" in config
        assert json.loads((run / "done.json").read_text())["step"] == 3
        assert json.loads((run / "meta.json").read_text())["world_size"] == world_size
        for name in benchmarks:
            record = json.loads((run / "eval" / f"{name}.json").read_text())
            assert record["metrics"] and all(math.isfinite(v) for v in record["metrics"].values()), (variant, name)
        imagenet = json.loads((run / "eval" / "imagenet.json").read_text())
        assert imagenet["protocol"]["n_classes"] == 1000 and imagenet["protocol"]["n_templates"] == 80
        assert json.loads((run / "eval" / "roxford5k.json").read_text())["n_items"] == 70  # the real query count
    report = (cwd / "report" / "report.md").read_text()
    assert "rehearsal" in report.splitlines()[0] and "not a result" in report.splitlines()[0]


def in_fresh_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cwd = ``tmp_path`` with the checkout's eval/ and clusters/ (runs/, data/ and the report land there)."""
    for name in ("eval", "clusters"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOFTCLIP_DATA", str(tmp_path / "data"))
