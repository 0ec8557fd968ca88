"""The worker pool on a real SLURM cluster (``slurm-pool``): trials share long-lived array tasks, the requeue and
killed-sweep tests run for both launchers in test_slurm_sweeps.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from softclip.sweep import load_sweep, open_study, run_sweep
from tests.slurm.test_slurm_sweeps import make_sweep
from tests.unit.launch import fakes

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


def pool_sweep(tmp_path: Path, cluster: Path, **fields) -> Path:
    return make_sweep(tmp_path, cluster, launcher={"name": "slurm-pool", "cluster": str(cluster)}, **fields)


def pool_results(cluster: Path) -> list[dict]:
    folder = Path(yaml.safe_load(cluster.read_text())["folder"])
    return [json.loads(p.read_text()) for p in sorted(folder.glob("slurm/pool-*/results/*.json"))]


def test_six_trials_share_two_workers(tmp_path, cluster_file):
    spec = load_sweep(pool_sweep(tmp_path, cluster_file, n_trials=6), "smoke")
    result = run_sweep(spec, workers=2, poll=0.2)
    assert result.counts == {"COMPLETE": 6}
    for t in open_study(spec).trials:
        assert t.values[0] == pytest.approx(fakes.score(t.params["loss.beta"], t.params["loss.tau"]))
    workers = Counter(r["worker"] for r in pool_results(cluster_file))
    assert sum(workers.values()) == 6
    assert len(workers) <= 2 and len({w.split("_")[0] for w in workers}) == 1, f"not one array: {workers}"

