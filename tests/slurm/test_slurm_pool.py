"""The worker pool on a real SLURM cluster (``slurm-pool``): trials share long-lived array tasks, a requeued
worker resumes its trial from the checkpoint, and a killed sweep restarted ends with exactly n_trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import yaml

from softclip.sweep import load_sweep, open_study, run_sweep
from softclip.sweep.study import run_key
from tests.slurm.test_slurm_sweeps import ROOT, _progress, _wait_for, make_sweep
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


def _claimed_worker(cluster: Path) -> str | None:
    folder = Path(yaml.safe_load(cluster.read_text())["folder"])
    claims = list(folder.glob("slurm/pool-*/claimed/*@*"))
    return claims[0].name.split("@")[1] if claims else None


def test_requeued_worker_resumes_its_trial_from_the_checkpoint(tmp_path, cluster_file, monkeypatch):
    monkeypatch.setenv("SOFTCLIP_FAKE_STEP_S", "1.0")
    spec = load_sweep(pool_sweep(tmp_path, cluster_file, n_trials=1,
                                 overrides={"train.steps": 20, "train.eval_every": 4}), "smoke")  # fmt: skip
    runner = threading.Thread(target=run_sweep, args=(spec,), kwargs={"poll": 0.5}, daemon=True)
    runner.start()
    run_dir = tmp_path / "runs" / "smoke" / "slurm" / "trials" / "slurm-t0000-s0"
    _wait_for(lambda: _progress(run_dir).get("step", 0) >= 4, 180, "the trial to reach step 4")
    worker = _claimed_worker(cluster_file)
    assert worker is not None
    subprocess.run(["scontrol", "requeue", worker], check=True, timeout=30)
    runner.join(timeout=400)
    assert not runner.is_alive(), "sweep did not finish after the requeue"
    trial = open_study(spec).trials[0]
    assert trial.state.name == "COMPLETE"
    assert trial.values[0] == pytest.approx(fakes.score(trial.params["loss.beta"], trial.params["loss.tau"]))
    progress = _progress(run_dir)
    assert progress["starts"] == 2 and progress["step"] == 20  # resumed by the same worker id, not restarted
    assert [r["worker"] for r in pool_results(cluster_file)] == [worker]


def test_killed_pool_sweep_restarted_ends_with_exactly_n_trials(tmp_path, cluster_file):
    sweep = pool_sweep(tmp_path, cluster_file, n_trials=4, overrides={"train.steps": 12, "train.eval_every": 3})
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO);"
            "from softclip.sweep import load_sweep, run_sweep;"
            f"run_sweep(load_sweep({str(sweep)!r}, 'smoke'), workers=2, poll=0.5)")  # fmt: skip
    env = {**os.environ, "SOFTCLIP_FAKE_STEP_S": "1.0"}
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    spec = load_sweep(sweep, "smoke")
    runs = tmp_path / "runs" / "smoke" / "slurm" / "trials"
    try:
        _wait_for(lambda: any(_progress(p).get("step", 0) >= 3 for p in runs.glob("*")), 240, "a trial to start")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    subprocess.run(["scancel", "--name=slurm"], check=False, timeout=30)  # the workers die with it
    _wait_for(lambda: not subprocess.run(["squeue", "-h", "--name=slurm"], capture_output=True, text=True,
                                         timeout=30).stdout.strip(), 60, "the workers to leave the queue")  # fmt: skip
    assert Counter(t.state.name for t in open_study(spec).trials)["RUNNING"] >= 1
    result = run_sweep(spec, workers=2, poll=0.5)
    study = open_study(spec)
    states = Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] == 4 and states["RUNNING"] == 0 and states["WAITING"] == 0
    keys = [run_key(t) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(keys) == len(set(keys)) == 4, f"duplicate runs: {keys}"
    assert result.counts["COMPLETE"] == 4
