"""Sweeps on a real SLURM cluster (submitit): Optuna workers as one job array, requeue with resume,
killed-and-restarted sweeps, the three storages, and pruning. Trials use the fast fake
(tests/unit/launch/fakes.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from softclip.sweep import load_sweep, open_study, run_sweep
from softclip.sweep.study import run_key
from softclip.sweep.worker import JOB_ATTR
from tests.unit.launch import fakes

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


def make_sweep(tmp_path: Path, cluster: Path, **fields) -> Path:
    data = {
        "name": "slurm", "base": str(ROOT / "ablations" / "base.yaml"),
        "trial": "tests.unit.launch.fakes:quadratic_trial",
        "overrides": {"train.steps": 8, "train.eval_every": 2},
        "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9},
                  "loss.tau": {"type": "float", "low": 0.02, "high": 0.3, "log": True}},
        "objective": {"metric": "synth/score"}, "sampler": {"name": "random", "seed": 0}, "n_trials": 4,
        "output_dir": str(tmp_path / "runs"), "heartbeat_interval": 2, "grace_period": 8,
        "launcher": {"name": "slurm", "cluster": str(cluster)}, **fields,
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def finished(study) -> Counter:
    return Counter(t.state.name for t in study.trials)


def test_six_trials_on_two_workers_of_one_job_array(tmp_path, cluster_file):
    spec = load_sweep(make_sweep(tmp_path, cluster_file, n_trials=6), "smoke")
    result = run_sweep(spec, workers=2)
    assert result.counts["COMPLETE"] == 6 and set(result.counts) <= {"COMPLETE", "SURPLUS"}
    study = open_study(spec)
    job_ids = [t.user_attrs[JOB_ATTR] for t in study.trials if t.state.name == "COMPLETE"]
    assert len({j.split("_")[0] for j in job_ids}) == 1, f"not one array: {job_ids}"
    assert set(j.split("_")[1] for j in job_ids) <= {"0", "1"}, f"more than two workers: {job_ids}"
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert t.values[0] == pytest.approx(fakes.score(t.params["loss.beta"], t.params["loss.tau"]))


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def test_requeued_job_resumes_from_its_checkpoint(tmp_path, cluster_file, monkeypatch):
    """The worker keeps its job id through the requeue, so the requeued worker fails and re-enqueues the trial
    it was running and finishes the retry in the same run folder, resuming from its checkpoint."""
    monkeypatch.setenv("SOFTCLIP_FAKE_STEP_S", "1.0")
    spec = load_sweep(make_sweep(tmp_path, cluster_file, n_trials=1, overrides={"train.steps": 20, "train.eval_every": 4},
                                 launcher={"name": "slurm", "cluster": str(cluster_file)}), "smoke")  # fmt: skip
    runner = threading.Thread(target=run_sweep, args=(spec,), daemon=True)
    runner.start()
    run_dir = tmp_path / "runs" / "smoke" / "slurm" / "trials" / "slurm-t0000-s0"  # <output_dir>/<profile>/<name>
    _wait_for(lambda: _progress(run_dir).get("step", 0) >= 4, 180, "the job to reach step 4")
    job_id = open_study(spec).trials[0].user_attrs[JOB_ATTR]
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    runner.join(timeout=400)
    assert not runner.is_alive(), "sweep did not finish after the requeue"
    trials = open_study(spec).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"], "the requeued worker retries its own trial"
    trial = trials[1]
    assert run_key(trial) == 0 and trial.params == trials[0].params
    assert trial.values[0] == pytest.approx(fakes.score(trial.params["loss.beta"], trial.params["loss.tau"]))
    progress = _progress(run_dir)
    assert progress["starts"] == 2 and progress["step"] == 20  # resumed, not restarted
    assert max(trial.intermediate_values) == 20 and min(trial.intermediate_values) > 4  # reported after resuming


def test_killed_sweep_restarted_ends_with_exactly_n_trials(tmp_path, cluster_file):
    sweep = make_sweep(tmp_path, cluster_file, n_trials=4, overrides={"train.steps": 12, "train.eval_every": 3},
                       launcher={"name": "slurm", "cluster": str(cluster_file)})  # fmt: skip
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO);"
            "from softclip.sweep import load_sweep, run_sweep;"
            f"run_sweep(load_sweep({str(sweep)!r}, 'smoke'), workers=2)")  # fmt: skip
    env = {**os.environ, "SOFTCLIP_FAKE_STEP_S": "1.0"}
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    spec = load_sweep(sweep, "smoke")
    runs = tmp_path / "runs" / "smoke" / "slurm" / "trials"
    try:
        _wait_for(lambda: any(_progress(p).get("step", 0) >= 3 for p in runs.glob("*")), 240, "a trial to start")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies mid-sweep ...
        driver.wait()
    subprocess.run(["scancel", "--name=slurm"], check=False, timeout=30)  # ... and so do its workers
    _wait_for(lambda: not subprocess.run(["squeue", "-h", "--name=slurm"], capture_output=True, text=True,
                                         timeout=30).stdout.strip(), 60, "the jobs to leave the queue")  # fmt: skip
    assert finished(open_study(spec))["RUNNING"] >= 1
    result = run_sweep(spec, workers=2)
    study = open_study(spec)
    states = finished(study)
    assert states["COMPLETE"] == 4 and states["RUNNING"] == 0 and states["WAITING"] == 0
    keys = [run_key(t) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(keys) == len(set(keys)) == 4, f"duplicate runs: {keys}"
    assert result.counts["COMPLETE"] == 4
    resumed = [t for t in study.trials if t.state.name == "COMPLETE" and run_key(t) != t.number]
    assert resumed, "the lost trials were re-run as retries of the same run folders"


@pytest.mark.parametrize("storage", ["sqlite", "journal", "postgresql"])
def test_same_sweep_on_each_storage(tmp_path, cluster_file, storage, request):
    url = {
        "sqlite": None,
        "journal": f"journal:{tmp_path / 'journal' / 'study.log'}",
        "postgresql": request.getfixturevalue("postgres_url") if storage == "postgresql" else None,
    }[storage]
    fields = {"n_trials": 2, "study_name": f"storage-{storage}-{uuid.uuid4().hex[:8]}"}
    if url:
        fields["storage"] = url
    spec = load_sweep(make_sweep(tmp_path, cluster_file, **fields), "smoke")
    result = run_sweep(spec, workers=2)
    assert result.counts["COMPLETE"] == 2 and set(result.counts) <= {"COMPLETE", "SURPLUS"}
    study = open_study(spec, result.storage_url)
    assert all(sorted(t.intermediate_values) == [2, 4, 6, 8] for t in study.trials if t.state.name == "COMPLETE")


def test_median_pruner_prunes_on_slurm(tmp_path, cluster_file):
    spec = load_sweep(make_sweep(tmp_path, cluster_file, n_trials=3, sampler={"name": "random", "seed": 1},
                                 pruner={"name": "median", "options": {"n_startup_trials": 2}}), "smoke")  # fmt: skip
    result = run_sweep(spec, workers=1)
    assert result.counts.get("PRUNED", 0) >= 1
    assert result.counts.get("COMPLETE", 0) + result.counts.get("PRUNED", 0) == 3
