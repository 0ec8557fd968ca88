"""The worker pool (``slurm-pool``): JSON codec, file queue, the worker loop, and the launcher end to end with
submitit's local executor (``submitit-local-pool``; the SLURM twin runs in tests/slurm)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from softclip.config import ConfigError
from softclip.launch import ClusterConfig, JobFailed, list_launchers, make_launcher, run_jobs, uses_cluster
from softclip.launch.pool import serve, worker_id
from softclip.launch.queue import TaskQueue, decode, encode, fn_ref
from softclip.sweep.trial import TrialTask
from tests.unit.launch import fakes


@dataclass(frozen=True)
class Item:
    name: str
    path: Path
    pair: tuple[int, int]


def test_codec_round_trips_dataclasses_tuples_paths_and_odd_keys():
    task = TrialTask(storage_url="sqlite:///x.db", study_name="s", trial_id=3, number=2, run_key=2,
                     params={"loss.beta": 0.3, "roi.aggregation": "mhsa"}, configs=[{"a": {"b": [1, 2]}}],
                     run_dirs=["/r/t0002-s0"], objectives=["retrieval/rsum"], prune_metric="retrieval/rsum")  # fmt: skip
    args = (task, Item("x", Path("/a/b"), (1, 2)), {"__tuple__": 1, "k": None}, [np.float32(0.5), float("inf")])
    back = decode(json.loads(json.dumps(encode(args))))
    assert back[0] == task and back[1] == Item("x", Path("/a/b"), (1, 2))
    assert back[2] == {"__tuple__": 1, "k": None}  # a user key that looks like a marker stays a key
    assert back[3][0] == 0.5 and math.isinf(back[3][1])
    assert isinstance(back, tuple) and isinstance(back[1].pair, tuple)


def test_codec_refuses_what_json_cannot_carry_and_non_dataclasses():
    with pytest.raises(TypeError, match="cannot send a object"):
        encode(object())
    with pytest.raises(TypeError, match="keys must be strings"):
        encode({1: 2})
    with pytest.raises(TypeError, match="is not a dataclass"):
        decode({"__dataclass__": "os:system", "fields": {}})


def test_fn_ref_needs_an_importable_module_level_function():
    assert fn_ref(fakes.square) == "tests.unit.launch.fakes:square"

    def local(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="module-level"):
        fn_ref(local)
    with pytest.raises(ValueError, match="module-level"):
        fn_ref(lambda x: x)


def test_queue_claims_each_job_once_in_order_and_fails_a_dead_workers_claims(tmp_path):
    queue = TaskQueue(tmp_path / "pool").create()
    for i in range(3):
        queue.put(f"{i:06d}", "tests.unit.launch.fakes:square", encode((i,)))
    assert queue.claim("a") == "000000" and queue.claim("b") == "000001" and queue.claim("a") == "000002"
    assert queue.claim("b") is None
    assert queue.claims() == {"000000": "a", "000001": "b", "000002": "a"}
    assert queue.fail_claims("a", "worker a died") == ["000000", "000002"]
    assert queue.result("000000") == {"ok": False, "error": "worker a died", "worker": "a"}
    assert queue.claims() == {"000001": "b"} and queue.result("000001") is None


def test_a_claim_whose_result_was_written_is_neither_rerun_nor_failed(tmp_path):
    queue = TaskQueue(tmp_path / "pool").create()
    queue.put("000001", "tests.unit.launch.fakes:square", encode((3,)))
    assert queue.claim("w") == "000001"
    queue.finish("000001", "w", {"ok": True, "value": 9})
    (queue.folder / "claimed" / "000001@w").touch()  # killed after writing the result, before dropping the claim
    assert queue.fail_claims("w", "worker w died") == []
    assert queue.result("000001") == {"ok": True, "value": 9} and queue.claims() == {}


def test_withdraw_cancels_only_unclaimed_jobs(tmp_path):
    queue = TaskQueue(tmp_path / "pool").create()
    queue.put("000001", "m:f", [])
    queue.put("000002", "m:f", [])
    assert queue.claim("w") == "000001"
    assert not queue.withdraw("000001")  # claimed: the worker has it
    assert queue.withdraw("000002") and queue.result("000002")["ok"] is False
    assert queue.pending() == []


def test_serve_resumes_its_own_claims_first_runs_the_rest_and_survives_failures(tmp_path):
    queue = TaskQueue(tmp_path / "pool").create()
    queue.put("000001", "tests.unit.launch.fakes:square", encode((3,)))
    queue.put("000002", "tests.unit.launch.fakes:fail", encode(("boom",)))
    queue.put("000003", "tests.unit.launch.fakes:square", encode((4,)))
    me = worker_id()
    os.rename(queue.folder / "queue" / "000003", queue.folder / "claimed" / f"000003@{me}")  # "before a requeue"
    queue.close()
    summary = serve(str(queue.folder), idle_s=30)
    assert summary == {"worker": me, "tasks": 3, "failed": 1, "exit": "closed"}
    assert decode(queue.result("000001")["value"]) == 9 and decode(queue.result("000003")["value"]) == 16
    assert "RuntimeError: boom" in queue.result("000002")["error"]
    status = json.loads((queue.folder / "workers" / f"{me}.json").read_text())
    assert status["tasks"] == 3 and status["exit"] == "closed"


def test_serve_exits_when_idle_or_past_its_lifetime(tmp_path):
    queue = TaskQueue(tmp_path / "pool").create()
    t0 = time.monotonic()
    assert serve(str(queue.folder), idle_s=0.3, poll_s=0.05)["exit"] == "idle"
    assert time.monotonic() - t0 < 5
    queue.put("000001", "tests.unit.launch.fakes:square", encode((2,)))
    assert serve(str(queue.folder), idle_s=30, lifetime_s=0.0) == {
        "worker": worker_id(), "tasks": 0, "failed": 0, "exit": "lifetime"}  # fmt: skip
    assert queue.pending() == ["000001"]  # left for a fresh worker


def test_pool_launchers_are_registered_and_take_a_cluster():
    assert {"slurm-pool", "submitit-local-pool"} <= set(list_launchers())
    assert uses_cluster("slurm-pool") and uses_cluster("slurm") and not uses_cluster("processes")


def test_pool_refuses_multi_task_jobs(tmp_path):
    cluster = ClusterConfig(executor="local", nodes=2, tasks_per_node=2)
    with pytest.raises(ConfigError, match="single-task workers.*2x2"):
        make_launcher("submitit-local-pool", cluster=cluster, folder=tmp_path)


@pytest.fixture()
def local_pool(tmp_path):
    cluster = ClusterConfig(executor="local", timeout_min=5, pool_idle_s=20, pool_poll_s=0.1)
    launcher = make_launcher("submitit-local-pool", workers=2, cpu_budget=2, cluster=cluster, folder=tmp_path)
    yield launcher
    launcher.close()
    for job in launcher._workers.values():
        job.cancel(check=False)


def test_local_pool_runs_jobs_on_at_most_workers_processes(local_pool):
    outcomes = run_jobs(local_pool, fakes.square, [(i,) for i in range(6)])
    assert [o.value for o in outcomes] == [i * i for i in range(6)]
    assert len(local_pool._workers) <= 2  # warm workers took every job
    failed = run_jobs(local_pool, fakes.fail, [("boom",)])[0]
    assert not failed.ok and "RuntimeError: boom" in failed.error and "worker" in failed.error
    with pytest.raises(JobFailed, match="module-level"):
        local_pool.submit(lambda: 1)
    local_pool.close()
    deadline = time.monotonic() + 60
    while not all(job.done() for job in local_pool._workers.values()):
        assert time.monotonic() < deadline, "workers did not exit after close()"
        time.sleep(0.2)
    summaries = [job.result() for job in local_pool._workers.values()]
    assert sum(s["tasks"] for s in summaries) == 7 and {s["exit"] for s in summaries} == {"closed"}


def test_local_pool_fails_the_job_of_a_killed_worker_and_starts_a_new_one(local_pool):
    slow = local_pool.submit(fakes.sleep_then, 60.0, 1)
    deadline = time.monotonic() + 60
    while slow.worker is None:
        assert time.monotonic() < deadline, "no worker claimed the job"
        time.sleep(0.1)
    slow.cancel()  # kills the worker that runs it
    local_pool.wait([slow], timeout=60)
    with pytest.raises(JobFailed, match="ended"):
        slow.result()
    assert local_pool.submit(fakes.square, 5).result() == 25
    assert len(local_pool._workers) == 2
