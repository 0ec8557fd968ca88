"""Launcher registry, in-process and local-process launchers, cluster YAML schema (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import submitit
from submitit.slurm.slurm import _get_default_parameters, _make_sbatch_string

from softclip.config import ConfigError, load_cluster
from softclip.launch import LAUNCHERS, ResumableCall, make_launcher
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
    ok, bad = launcher.map(fakes.dispatch, [("square", 7), ("fail", "boom")])
    assert ok.ok and ok.value == 49
    assert not bad.ok and "RuntimeError: boom" in bad.error


def test_processes_budget_caps_parallel_jobs():
    assert make_launcher("processes", workers=8, cpus_per_job=2, cpu_budget=6).max_parallel == 3
    assert make_launcher("processes", workers=2, cpus_per_job=1, cpu_budget=16).max_parallel == 2
    assert make_launcher("processes", workers=4, cpus_per_job=8, cpu_budget=2).max_parallel == 1


def test_processes_run_in_parallel_with_thread_caps(tmp_path):
    """Two tasks of one array run at once: each waits (bounded) until both have started, then records its
    running interval; the intervals intersect. Each task sees one thread and runs in its own process."""
    launcher = make_launcher("processes", workers=2, cpus_per_job=1, cpu_budget=2, folder=tmp_path / "jobs")
    outcomes = launcher.map(fakes.rendezvous, [(str(tmp_path), "a"), (str(tmp_path), "b")])
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    (a_start, a_end), (b_start, b_end) = (o.value["interval"] for o in outcomes)
    assert max(a_start, b_start) < min(a_end, b_end), "the two tasks did not run at the same time"
    assert all(o.value["met"] for o in outcomes), "a task never saw the other one start"
    envs = [o.value["env"] for o in outcomes]
    assert all(e["OMP_NUM_THREADS"] == "1" and e["MKL_NUM_THREADS"] == "1" for e in envs)
    assert len({e["pid"] for e in envs} | {fakes.environment()["pid"]}) == 3


def test_processes_failures_are_isolated(tmp_path):
    launcher = make_launcher("processes", workers=3, cpu_budget=3, folder=tmp_path)
    outcomes = launcher.map(fakes.dispatch, [("square", 3), ("fail", "bad"), ("crash", None)])
    assert [o.ok for o in outcomes] == [True, False, False]
    assert outcomes[0].value == 9
    assert "RuntimeError: bad" in outcomes[1].error
    assert outcomes[2].error.startswith(f"job {outcomes[2].job_id}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(o.job_id for o in outcomes), "one folder per job"


def test_map_keeps_order(tmp_path):
    outcomes = make_launcher("inprocess").map(fakes.square, [(i,) for i in range(5)])
    assert [o.value for o in outcomes] == [0, 1, 4, 9, 16] and [o.args for o in outcomes] == [(i,) for i in range(5)]


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


def test_submitit_local_runs_one_array(tmp_path):
    launcher = make_launcher("submitit-local", workers=2, folder=tmp_path, cluster=ClusterConfig(executor="local",
                                                                                               timeout_min=5))
    outcomes = launcher.map(fakes.square, [(6,), (7,)])
    assert [o.value for o in outcomes] == [36, 49]
    assert len(list(tmp_path.rglob("*_result.pkl"))) == 2


def test_multi_task_jobs_export_the_torch_distributed_environment(tmp_path):
    cluster = ClusterConfig(executor="local", tasks_per_node=2, timeout_min=5)
    launcher = make_launcher("submitit-local", folder=tmp_path, cluster=cluster)
    (outcome,) = launcher.map(fakes.dist_envs, [(str(tmp_path / "envs"),)])
    assert outcome.ok, outcome.error
    envs = sorted((json.loads(p.read_text()) for p in (tmp_path / "envs").glob("*.json")), key=lambda e: e["RANK"])
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["MASTER_ADDR"] and envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
