"""benchmarks/power.py: the paired statistics and the report of the power study, on hand-made records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from softclip.report.stats import mde_paired

SPEC = importlib.util.spec_from_file_location("power", Path(__file__).resolve().parents[2] / "benchmarks" / "power.py")
power = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(power)


def record(method: str, seed: int, value: float) -> dict:
    metrics = {label: value for label in power.METRICS}
    metrics["eval_s"] = 2.0
    return {"candidate": "vit-p8-160", "method": method, "seed": seed, "wall_s": 10.0 + seed, "cpu_s": 20.0 + seed,
            "metrics": metrics}


def test_summary_pairs_by_seed_and_matches_hand_statistics(tmp_path: Path) -> None:
    clip = [30.0, 40.0, 35.0, 50.0]
    oracle = [33.0, 41.0, 39.0]  # seed 3 has no oracle run: it must not be paired
    records = [record("clip", s, v) for s, v in enumerate(clip)] + [record("oracle", s, v) for s, v in enumerate(oracle)]
    summary = power.summarize(records, ["vit-p8-160"])["vit-p8-160"]
    assert summary["seeds"] == [0, 1, 2]
    row = summary["metrics"]["zero-shot top-1"]
    diff = np.array(oracle) - np.array(clip[:3])
    sd = diff.std(ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / np.sqrt(3)
    assert row["diff_mean"] == pytest.approx(diff.mean())
    assert row["diff_sd"] == pytest.approx(sd)
    assert (row["diff_low"], row["diff_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert row["half_width_5"] == pytest.approx(stats.t.ppf(0.975, 4) * sd / np.sqrt(5))
    assert row["mde_10"] == pytest.approx(mde_paired(sd, 10)) and row["mde_10"] < row["mde_5"]
    assert row["clip_mean"] == pytest.approx(np.mean(clip[:3]))
    assert summary["cpu_s"] == pytest.approx(np.median([20, 21, 22, 23, 20, 21, 22]))

    power.write_report(tmp_path, {"vit-p8-160": summary}, records, 5.0)
    text = (tmp_path / "power.md").read_text()
    assert "| vit-p8-160 | zero-shot top-1 |" in text and f"{diff.mean():.2f}" in text
    assert json.loads((tmp_path / "power.json").read_text())["summary"]["vit-p8-160"]["seeds"] == [0, 1, 2]


def test_unknown_candidate_is_a_one_line_error() -> None:
    with pytest.raises(SystemExit, match="unknown candidate 'nope'"):
        power.main(["--candidates", "nope"])
