"""The ``rehearsal`` profile end to end for one model (RN50 at 224 px, MHSA over K <= 50 VinVL-shaped regions of
2,054 dims) on the smallest paper-shaped data: train through ``softclip train``, then score the paper suite's
benchmarks through ``evaluate_checkpoint`` with result JSON for each.

ImageNet is planned and loaded here (1,000 classes) but not scored: its 80,000 prompts take ~40 min on one CPU
core with RN50's text tower (reports/perf/eval_scale.md); the full suite runs in the GPU check and in
``softclip reproduce --profile rehearsal`` on a machine that has the time. ``data.workers=0`` keeps the test to
the 2 cores CI has (the profile's 8 loader workers are a GPU node's setting)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from softclip import cli
from softclip.data.synth.paper_shapes import PAPER_VARS, PaperShapes, write_paper_shapes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCORED = ["flickr30k", "coco", "roxford5k", "rparis6k", "copydays"]


def test_rehearsal_trains_rn50_and_scores_the_paper_suite(tmp_path, monkeypatch):
    from softclip.evaluation import evaluate_checkpoint
    from softclip.evaluation.suite import plan_suite, read_suite

    data = tmp_path / "rehearsal"
    write_paper_shapes(data, PaperShapes(n_train=16, samples_per_shard=8, retrieval_images=3, revisitop_db=5,
                                         copydays_originals=5, copydays_distractors=2, copydays_whitening=2,
                                         eval_size=32))  # fmt: skip
    for var, sub in PAPER_VARS.items():
        monkeypatch.setenv(var, str(data / sub))
    run = tmp_path / "run"
    argv = ["train", str(ROOT / "ablations" / "base.yaml"), "--profile", "rehearsal", "--run-dir", str(run),
            "--no-eval", f"data.root={data}", "data.workers=0"]  # fmt: skip
    assert cli.main(argv) == 0
    done = json.loads((run / "done.json").read_text())
    assert done["step"] == 3 and done["samples"] == 12
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]  # fmt: skip
    assert losses and all(math.isfinite(v) for v in losses)
    assert len(plan_suite(*read_suite(ROOT / "eval" / "paper.yaml"), data)) == 6
    results = evaluate_checkpoint(run, ROOT / "eval" / "paper.yaml", benchmarks=SCORED, device="cpu")
    assert set(results) == set(SCORED)
    for name in SCORED:
        record = json.loads((run / "eval" / f"{name}.json").read_text())
        assert record["metrics"] and all(math.isfinite(v) for v in record["metrics"].values())
    assert json.loads((run / "eval" / "roxford5k.json").read_text())["n_items"] == 70  # the real query count
