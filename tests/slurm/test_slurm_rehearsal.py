"""The ``rehearsal`` profile under the SLURM launcher as a 2-task DDP job (gloo on CPU): RN50 at 224 px with
MHSA over 50 regions trains a few steps on paper-shaped data across two processes, then rank 0 scores the paper
suite (ImageNet left out: its 80,000 prompts are ~40 min of CPU; see tests/integration/test_rehearsal.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from softclip.ablate import load_ablation, run_ablation
from softclip.data.synth.paper_shapes import PAPER_VARS, PaperShapes, write_paper_shapes

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parents[2]


def test_rehearsal_as_a_two_task_ddp_job(tmp_path, cluster_file, monkeypatch):
    data = tmp_path / "rehearsal"
    write_paper_shapes(data, PaperShapes(n_train=16, samples_per_shard=8, retrieval_images=3, revisitop_db=5,
                                         copydays_originals=5, copydays_distractors=2, copydays_whitening=2,
                                         eval_size=32))  # fmt: skip
    for var, sub in PAPER_VARS.items():
        monkeypatch.setenv(var, str(data / sub))  # sbatch exports the submitting environment
    cluster = yaml.safe_load(cluster_file.read_text())
    cluster.update(tasks_per_node=2, cpus_per_task=1, mem_gb=12)
    cluster_file.write_text(yaml.safe_dump(cluster))
    suite = yaml.safe_load((ROOT / "eval" / "paper.yaml").read_text())
    del suite["benchmarks"]["imagenet"]
    suite.update(workers=0, name="paper_no_imagenet")
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    path = tmp_path / "rehearsal.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rehearsal", "base": str(ROOT / "ablations" / "base.yaml"), "output_dir": str(tmp_path / "runs"),
        "overrides": {"data.root": str(data), "data.workers": 0, "eval.suite": str(tmp_path / "suite.yaml"),
                      "train.eval_every": 0},
        "variants": {"softclip": {}}, "seeds": [0],
        "launcher": {"name": "slurm", "cluster": str(cluster_file), "workers": 1},
    }))  # fmt: skip
    spec = load_ablation(path, "rehearsal")
    result = run_ablation(spec)
    assert not result.failed, [o.error for o in result.failed]
    (job,) = result.jobs
    run = Path(job.run_dir)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["world_size"] == 2  # both tasks joined the process group
    assert json.loads((run / "done.json").read_text())["step"] == 3
    for name in ("flickr30k", "coco", "roxford5k", "rparis6k", "copydays"):
        assert (run / "eval" / f"{name}.json").is_file(), name
