"""Launcher registry, in-process and local-process launchers, cluster YAML schema (no services needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import submitit
from submitit.slurm.slurm import _get_default_parameters, _make_sbatch_string

from softclip.config import ConfigError, load_cluster
from softclip.launch import LAUNCHERS, JobFailed, ResumableCall, make_launcher, run_jobs
from softclip.registry import RegistryError
from softclip.schema import ClusterConfig
from tests.unit.launch import fakes

ROOT = Path(__file__).resolve().parents[3]


def test_registry_lists_the_launchers():
    assert LAUNCHERS.names() == [
        "inprocess", "processes", "slurm", "submitit-local"]  # fmt: skip


def test_unknown_launcher_names_the_closest():
    with pytest.raises(RegistryError, match="did you mean 'processes'"):
        make_launcher("proceses")


def test_inprocess_returns_values_and_captures_errors():
    launcher = make_launcher("inprocess", workers=4)
    assert launcher.max_parallel == 1
    assert launcher.submit(fakes.square, 7).result() == 49
    job = launcher.submit(fakes.fail, "boom")
    assert job.done()
    with pytest.raises(JobFailed, match="RuntimeError: boom"):
        job.result()


def test_processes_budget_caps_parallel_jobs():
    assert make_launcher("processes", workers=8, cpus_per_job=2, cpu_budget=6).max_parallel == 3
    assert make_launcher("processes", workers=2, cpus_per_job=1, cpu_budget=16).max_parallel == 2
    assert make_launcher("processes", workers=4, cpus_per_job=8, cpu_budget=2).max_parallel == 1


def test_processes_run_in_parallel_with_thread_caps():
    launcher = make_launcher("processes", workers=2, cpus_per_job=1, cpu_budget=2)
    jobs = launcher.submit_many(fakes.sleep_then, [(1.5, 1), (1.5, 2)])
    t0 = time.monotonic()
    while not all(j.done() for j in jobs):
        launcher.wait(jobs, timeout=5)
        assert time.monotonic() - t0 < 120
    assert [j.result() for j in jobs] == [1, 2]
    env = launcher.submit(fakes.environment).result()
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert env["pid"] != fakes.environment()["pid"]


def test_processes_failures_are_isolated():
    launcher = make_launcher("processes", workers=3, cpu_budget=3)
    outcomes = run_jobs(launcher, fakes.dispatch, [("square", 3), ("fail", "bad"), ("crash", None)])
    assert [o.ok for o in outcomes] == [True, False, False]
    assert outcomes[0].value == 9
    assert "RuntimeError: bad" in outcomes[1].error
    assert "exited with code 3" in outcomes[2].error


def test_run_jobs_keeps_order_and_reports_each(tmp_path):
    seen = []
    launcher = make_launcher("inprocess")
    outcomes = run_jobs(launcher, fakes.square, [(i,) for i in range(5)], on_done=lambda o: seen.append(o.value))
    assert [o.value for o in outcomes] == [0, 1, 4, 9, 16]
    assert sorted(seen) == [0, 1, 4, 9, 16]


def test_cluster_files_validate():
    local = load_cluster(ROOT / "clusters" / "local.yaml")
    assert local.partition is None and local.executor == "slurm"
    example = load_cluster(ROOT / "clusters" / "example.yaml")
    params = example.slurm_parameters(cpus_per_job=2, workers=4, job_name="t")
    assert params["gpus_per_node"] == 1 and params["time"] == example.timeout_min
    assert "partition" not in params  # nothing written in the template, nothing sent


def test_cluster_parameters_map_to_sbatch_options(tmp_path):
    cluster = ClusterConfig(partition="gpu", account="acc", qos="high", mem_gb=8, additional={"mail-type": "END"})
    params = cluster.slurm_parameters(cpus_per_job=3, workers=5, job_name="sweep")
    assert params["partition"] == "gpu" and params["account"] == "acc" and params["qos"] == "high"
    assert params["mem"] == "8GB" and params["cpus_per_task"] == 3 and params["array_parallelism"] == 5
    assert params["additional_parameters"] == {"mail-type": "END"}
    # submitit accepts every key and renders it as the sbatch option; its own renderer needs no SLURM binary
    # (SlurmExecutor itself refuses to start where `srun` is absent, as on a fresh machine)
    assert set(params) <= set(_get_default_parameters())
    sbatch = _make_sbatch_string(command="true", folder=tmp_path, **params)
    for line in ("--partition=gpu", "--account=acc", "--qos=high", "--mem=8GB", "--cpus-per-task=3",
                 "--job-name=sweep", "--mail-type=END"):  # fmt: skip
        assert f"#SBATCH {line}" in sbatch.splitlines(), line


def test_cluster_unknown_key_is_named(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("partiton: gpu\n")
    with pytest.raises(ConfigError, match="unknown key 'partiton'"):
        load_cluster(bad)
    bad.write_text("timeout_min: 0\n")
    with pytest.raises(ConfigError, match="timeout_min"):
        load_cluster(bad)


def test_resumable_call_checkpoint_resubmits_the_same_call():
    call = ResumableCall(fakes.square, threads=2)
    delayed = call.checkpoint(5)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function is call and delayed.args == (5,)


def test_resumable_call_checkpoint_saves_the_running_trainer_first(monkeypatch):
    import softclip.train

    saved = []
    monkeypatch.setattr(softclip.train, "save_now", lambda: saved.append(True))
    ResumableCall(fakes.square).checkpoint(3)
    assert saved == [True]


def test_submitit_local_runs_a_job(tmp_path):
    launcher = make_launcher("submitit-local", workers=1, folder=tmp_path, cluster=ClusterConfig(executor="local",
                                                                                               timeout_min=5))
    job = launcher.submit(fakes.square, 6)
    assert job.result() == 36
    assert any(tmp_path.rglob("*_result.pkl"))


def test_processes_reuse_workers_and_replace_crashed_ones():
    launcher = make_launcher("processes", workers=1, cpu_budget=1)
    try:
        first = launcher.submit(fakes.environment).result()["pid"]
        assert launcher.submit(fakes.environment).result()["pid"] == first  # torch imported once per worker
        with pytest.raises(JobFailed, match="exited with code 3"):
            launcher.submit(fakes.crash).result()
        assert launcher.submit(fakes.environment).result()["pid"] != first
    finally:
        launcher.close()


def test_multi_task_jobs_export_the_torch_distributed_environment(tmp_path):
    cluster = ClusterConfig(executor="local", tasks_per_node=2, timeout_min=5)
    launcher = make_launcher("submitit-local", folder=tmp_path, cluster=cluster)
    job = launcher.submit(fakes.dist_env)
    job.result()
    envs = sorted(job.job.results(), key=lambda e: e["RANK"])
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["MASTER_ADDR"] and envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]


DRIVER = """
from softclip.launch import make_launcher
from tests.unit.launch import fakes
launcher = make_launcher("processes", workers=1, cpu_budget=1)
job = launcher.submit(fakes.sleep_then, 600, 1)
print(job.job_id.split("-")[1], flush=True)
job.result()  # blocks while the worker runs its 600 s job, until this driver is killed
"""


def test_processes_workers_die_with_a_killed_driver():
    """SIGKILL of the driver (no cleanup runs) takes its busy worker with it: no orphan keeps training."""
    import os
    import select
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=root, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    try:
        worker = int(driver.stdout.readline())
        exited = os.pidfd_open(worker)  # becomes readable when the worker exits (no polling)
        try:
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
            ready, _, _ = select.select([exited], [], [], 60)
            assert ready, f"worker {worker} outlived its killed driver by 60 s"
        finally:
            os.close(exited)
    finally:
        driver.kill()
