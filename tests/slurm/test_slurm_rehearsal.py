"""``softclip reproduce --profile rehearsal`` through the SLURM launcher, each run a 2-task DDP job (gloo on
CPU): the paper-shaped data is written on first use, RN50 CLIP and SoftCLIP (MHSA over K <= 50 regions of 2,054
dims) train 3 steps across two processes, rank 0 scores the whole paper suite (ImageNet's 80,000 prompts
included), and the report says it is a rehearsal. The ViT-B-32 pair is left out here (``--exclude``) to keep the
tier within CI's budget: each run's suite costs ~25 CPU-minutes (reports/perf/eval_scale.md); the local tier
(tests/integration/test_rehearsal.py) runs all four."""

from __future__ import annotations

import pytest
import yaml

from softclip import cli
from tests.integration.rehearsal_checks import VARIANTS, check_rehearsal, in_fresh_checkout

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(7200)]
RN50 = {k: v for k, v in VARIANTS.items() if v == "RN50"}


def test_reproduce_rehearsal_as_two_task_ddp_jobs(tmp_path, cluster_file, monkeypatch):
    cluster = yaml.safe_load(cluster_file.read_text())
    cluster.update(tasks_per_node=2, cpus_per_task=1, mem_gb=12, timeout_min=120)
    cluster_file.write_text(yaml.safe_dump(cluster))
    in_fresh_checkout(tmp_path, monkeypatch)  # sbatch exports this environment (SOFTCLIP_DATA, the suite's roots)
    argv = ["reproduce", "--profile", "rehearsal", "--launcher", "slurm", "--cluster", str(cluster_file),
            "--exclude", "main.clip_vitb32,main.softclip_vitb32", "--out", str(tmp_path / "report")]  # fmt: skip
    assert cli.main(argv) == 0
    check_rehearsal(tmp_path, world_size=2, variants=RN50)
