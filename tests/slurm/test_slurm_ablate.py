"""An ablation on a real SLURM cluster: one job array over chunks of runs, each task training its share in turn
(real smoke training, a few steps), and a re-run that finds everything finished."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from softclip.ablate import load_ablation, run_ablation
from softclip.train.rundir import is_finished

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


def test_four_runs_go_out_as_two_chunks_of_one_array(tmp_path, cluster_file):
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chunks", "base": str(ROOT / "ablations" / "base.yaml"), "output_dir": str(tmp_path / "runs"),
        "overrides": {"train.steps": 4, "train.ckpt_every": 2, "data.root": str(tmp_path / "data"),
                      "eval.suite": str(ROOT / "eval" / "synthetic.yaml")},
        "variants": {"clip": {"loss.target": "hard"}, "soft": {}}, "seeds": [0, 1],
        "launcher": {"name": "slurm", "cluster": str(cluster_file), "workers": 2},
    }))  # fmt: skip
    spec = load_ablation(path, "smoke")
    result = run_ablation(spec)
    assert not result.failed, [o.error for o in result.failed]
    assert len(result.outcomes) == 4
    job_ids = {o.job_id for o in result.outcomes}
    assert len(job_ids) == 2 and len({j.split("_")[0] for j in job_ids}) == 1, f"not one array of 2: {job_ids}"
    assert all(is_finished(j.run_dir, j.suite, j.config) for j in result.jobs)
    again = run_ablation(spec)
    assert len(again.skipped) == 4 and not again.outcomes
