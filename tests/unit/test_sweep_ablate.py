"""Ablation files (variants x seeds), skip-finished logic and running through a launcher (fake job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from softclip.ablate import load_ablation, plan_jobs, run_ablation, run_chunk
from softclip.config import ConfigError
from softclip.train.rundir import expected_benchmarks, is_finished
from tests.unit.launch import fakes

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, **fields) -> Path:
    data = {"name": "abl", "base": str(ROOT / "ablations" / "base.yaml"), "output_dir": str(tmp_path / "runs"),
            "variants": {"clip": {"loss.target": "hard"}, "soft": ["loss.beta=0.5", "loss.re_weight=0"]},
            "seeds": [0, 1], **fields}  # fmt: skip
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_disentangle_file_plans_variants_by_seeds():
    path = ROOT / "ablations" / "disentangle.yaml"
    assert path.read_text().startswith("#")
    spec = load_ablation(path)
    assert list(spec.variants) == ["infonce", "soft", "soft_re", "re_only"]
    jobs = plan_jobs(spec)
    assert len(jobs) == 20  # 4 variants x 5 seeds
    infonce = next(j for j in jobs if j.variant == "infonce")
    assert infonce.config["loss"]["target"] == "hard" and infonce.config["loss"]["re_weight"] == 0.0
    assert len(plan_jobs(load_ablation(path, "smoke"))) == 4
    assert [j.seed for j in plan_jobs(load_ablation(path, seeds=[5, 6]))][:2] == [5, 6]


def test_variant_lists_and_profiles(tmp_path):
    spec = load_ablation(write(tmp_path, profiles={"smoke": {"seeds": [3]}}), "smoke")
    jobs = plan_jobs(spec)
    assert [(j.variant, j.seed) for j in jobs] == [("clip", 3), ("soft", 3)]
    soft = jobs[1].config
    assert soft["loss"]["beta"] == 0.5 and soft["loss"]["re_weight"] == 0
    assert soft["seed"] == 3 and soft["profile"] == "smoke" and soft["train"]["steps"] == 30  # base's smoke
    assert Path(jobs[0].run_dir).parent == tmp_path / "runs" / "smoke" / "runs"  # named by identity, not variant
    assert Path(jobs[0].run_dir).name == f"s3-{jobs[0].meta['identity']}" != Path(jobs[1].run_dir).name


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"variants": {"bad": {"loss.bta": 1}}}, r"variant bad.*unknown key 'loss.bta'; did you mean 'loss.beta'"),
        ({"variants": {"bad": {"loss.beta": 2.0}}}, r"variant bad.*loss.beta=2.0 is out of range"),
        ({"variants": {}}, r"variants: needs at least one variant"),
        ({"seeds": [1, 1]}, r"seeds=\[1, 1\] needs at least one seed, without repeats"),
        ({"varients": {}}, r"unknown key 'varients'; did you mean 'variants'"),
    ],
)
def test_errors_name_the_variant_and_key(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        load_ablation(write(tmp_path, **fields))


def test_finished_needs_done_and_every_benchmark(tmp_path):
    suite = str(ROOT / "eval" / "synthetic.yaml")
    benches = expected_benchmarks(suite)
    assert benches == ["zeroshot", "retrieval", "instance", "copydays"]
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for b in benches:
        (run / "eval" / f"{b}.json").write_text(json.dumps({"metrics": {}}))
    (run / "eval" / "step_00000010.json").write_text("{}")
    assert not is_finished(run, suite)  # no done.json
    (run / "done.json").write_text("{}")
    assert is_finished(run, suite)
    (run / "eval" / "copydays.json").unlink()
    assert not is_finished(run, suite)  # one benchmark missing


def test_finished_runs_are_skipped_on_rerun(tmp_path, fake_runs):
    spec = load_ablation(write(tmp_path, overrides={"eval.suite": str(ROOT / "eval" / "synthetic.yaml")}))
    first = run_ablation(spec, launcher="inprocess")
    assert len(first.outcomes) == 4 and not first.failed and not first.skipped
    Path(first.jobs[0].run_dir, "done.json").unlink()  # one run interrupted
    second = run_ablation(spec, launcher="inprocess")
    assert len(second.skipped) == 3
    assert [o.args[0].run_dir for o in second.outcomes] == [first.jobs[0].run_dir]


class _Cluster:
    """Stands in for a launcher in :func:`chunks` (``max_parallel``)."""

    def __init__(self, max_parallel: int) -> None:
        self.max_parallel = max_parallel


def test_every_launcher_gets_one_chunk_of_runs_per_array_task(tmp_path):
    from softclip.ablate import chunks

    jobs = plan_jobs(load_ablation(write(tmp_path, seeds=[0, 1, 2])))  # 2 variants x 3 seeds
    parts = chunks(jobs, _Cluster(4))
    assert len(parts) == 4 and sorted(len(p) for p in parts) == [1, 1, 2, 2]
    assert sorted(j.run_dir for p in parts for j in p) == sorted(j.run_dir for j in jobs)  # each run once
    assert [len(p) for p in chunks(jobs[:2], _Cluster(4))] == [1, 1]
    assert [len(p) for p in chunks(jobs, _Cluster(1))] == [6]  # in process: one task trains every run in turn


def test_a_failed_run_fails_alone_and_the_chunk_goes_on(tmp_path, fake_runs, monkeypatch):
    import softclip.ablate

    def flaky(job):
        if job.variant == "clip" and job.seed == 0:
            raise RuntimeError("out of memory")
        return fakes.ablation_job(job)

    monkeypatch.setattr(softclip.ablate, "run_ablation_job", flaky)
    spec = load_ablation(write(tmp_path, overrides={"eval.suite": str(ROOT / "eval" / "synthetic.yaml")}))
    jobs = plan_jobs(spec)
    results = run_chunk(jobs)
    assert [("error" in r) for r in results] == [True, False, False, False]
    assert "RuntimeError: out of memory" in results[0]["error"]
    again = run_chunk(jobs)  # a requeued task: the finished runs are skipped, not redone
    assert [r.get("value", {}).get("skipped") for r in again] == [None, True, True, True]


def test_a_folder_holding_another_configs_run_fails_and_is_never_re_evaluated(tmp_path):
    from softclip.ablate import run_ablation_job

    job = plan_jobs(load_ablation(write(tmp_path)))[0]
    run = Path(job.run_dir)
    run.mkdir(parents=True)
    other = {**job.config, "loss": {**job.config["loss"], "beta": 0.9}}  # e.g. a previous design's run
    (run / "config.yaml").write_text(yaml.safe_dump(other))
    (run / "meta.json").write_text("{}")  # a run made before run.json existed
    (run / "done.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"different config.*loss.beta: 0.9 -> "):
        run_ablation_job(job)
    assert "different config" in run_chunk([job])[0]["error"]
    assert not (run / "eval").exists()  # nothing was evaluated under the new identity


def test_two_drivers_of_one_ablation_share_the_work_and_both_succeed(tmp_path, fake_runs, monkeypatch):
    """While the first driver trains a run (its lock held by a live process), the second waits for it, skips
    it as finished, trains the rest, and reports what it did; the first then finds everything finished."""
    import os
    import socket
    import time

    import softclip.train.lock
    from softclip.ablate import run_ablation

    spec = load_ablation(write(tmp_path, overrides={"eval.suite": str(ROOT / "eval" / "synthetic.yaml")}))
    jobs = plan_jobs(spec)
    busy = Path(jobs[0].run_dir)
    busy.mkdir(parents=True)
    owner = {"host": socket.gethostname(), "pid": os.getppid(), "job_id": None, "token": "other",
             "heartbeat": time.time()}  # a live process on this host: the first driver's trainer
    (busy / "lock.json").write_text(json.dumps(owner))
    waits = []

    def first_driver_finishes(seconds: float) -> None:  # what the first driver does while the second waits
        waits.append(seconds)
        fakes.ablation_job(jobs[0])
        (busy / "lock.json").unlink()

    monkeypatch.setattr(softclip.train.lock.time, "sleep", first_driver_finishes)
    second = run_ablation(spec, launcher="inprocess")
    assert len(waits) == 1 and not second.failed
    assert [j.run_dir for j in second.skipped] == [str(busy)]  # waited for, then skipped as finished
    assert sorted(o.args[0].run_dir for o in second.outcomes) == sorted(j.run_dir for j in jobs[1:])
    first = run_ablation(spec, launcher="inprocess")
    assert len(first.skipped) == 4 and not first.outcomes and not first.failed


def test_a_folder_holding_no_run_is_refused_and_never_evaluated(tmp_path):
    """A job's folder holding files but no run marker (a user's folder) is refused by name, not evaluated."""
    from softclip.ablate import run_ablation_job
    from softclip.train.errors import RunFolderError

    job = plan_jobs(load_ablation(write(tmp_path)))[0]
    run = Path(job.run_dir)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(job.config))
    (run / "done.json").write_text("{}")
    with pytest.raises(RunFolderError, match=r"holds no run"):
        run_ablation_job(job)
    assert not (run / "eval").exists()
