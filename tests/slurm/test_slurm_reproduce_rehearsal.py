"""``softclip reproduce --profile rehearsal`` through the SLURM launcher, each run a 2-task DDP job (gloo on
CPU): the paper-shaped data is written on first use, the RN50 CLIP run (the ablation's baseline, so the one run
that can stand alone) trains 3 steps across two processes on the 224-px shards, rank 0 scores the whole paper
suite (ImageNet's 80,000 prompts included), and the report says it is a rehearsal. Its own step in .ci/run
(``make test-slurm-rehearsal``). The other three runs are left out here (``--exclude``) to keep CI within its
budget: each run's suite costs ~20 CPU-minutes with one thread (reports/perf/eval_scale.md); the local rehearsal
tier (tests/integration/test_rehearsal.py) runs CLIP RN50 with SoftCLIP ViT-B-32 (MHSA)."""

from __future__ import annotations

import pytest
import yaml

from softclip import cli
from tests.integration.rehearsal_checks import VARIANTS, check_rehearsal, in_fresh_checkout

pytestmark = [pytest.mark.slurm, pytest.mark.slurm_rehearsal, pytest.mark.timeout(7200)]
LEFT_OUT = ("softclip", "clip_vitb32", "softclip_vitb32")


def test_reproduce_rehearsal_as_two_task_ddp_jobs(tmp_path, cluster_file, monkeypatch):
    cluster = yaml.safe_load(cluster_file.read_text())
    cluster.update(tasks_per_node=2, cpus_per_task=1, mem_gb=12, timeout_min=120)
    cluster_file.write_text(yaml.safe_dump(cluster))
    in_fresh_checkout(tmp_path, monkeypatch)  # sbatch exports this environment (SOFTCLIP_DATA, the suite's roots)
    argv = ["reproduce", "--profile", "rehearsal", "--launcher", "slurm", "--cluster", str(cluster_file),
            "--exclude", ",".join(f"main.{v}" for v in LEFT_OUT), "--out", str(tmp_path / "report")]  # fmt: skip
    assert cli.main(argv) == 0
    check_rehearsal(tmp_path, world_size=2, variants={k: v for k, v in VARIANTS.items() if k not in LEFT_OUT})
