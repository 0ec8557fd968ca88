"""One owner per run folder: the lock file, its refusal message, and each way a stale lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from softclip.train.errors import RunLockedError
from softclip.train.lock import LOCK, RunLock, slurm_job_id, stale_reason


def write_owner(run_dir, **owner) -> dict:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": None, "token": "theirs",
              "started": time.time(), "heartbeat": time.time(), **owner}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK).write_text(json.dumps(record))
    return record


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_names_its_owner_and_a_second_owner_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    with RunLock(tmp_path / "run", heartbeat_s=0) as lock:
        owner = json.loads((tmp_path / "run" / LOCK).read_text())
        assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
        assert owner["job_id"] == "4242" and owner["token"] == lock.token
        monkeypatch.setenv("SLURM_JOB_ID", "9999")  # another job on the same folder
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path / "run", heartbeat_s=0).acquire()
        message = str(err.value)
        assert str(tmp_path / "run") in message and f"pid {os.getpid()}" in message and "SLURM job 4242" in message
        assert err.value.exit_code == 2
        assert json.loads((tmp_path / "run" / LOCK).read_text())["token"] == lock.token  # untouched
    assert not (tmp_path / "run" / LOCK).exists()  # released
    assert not list((tmp_path / "run").glob(".*tmp"))


def test_dead_pid_on_this_host_is_taken_over_and_logged(tmp_path, caplog):
    write_owner(tmp_path, pid=dead_pid())
    with caplog.at_level(logging.WARNING, logger="softclip.train"), RunLock(tmp_path, heartbeat_s=0) as lock:
        assert lock.owns()
    assert "took over the stale lock" in caplog.text and "is gone" in caplog.text


def test_expired_heartbeat_elsewhere_is_taken_over_a_fresh_one_is_not(tmp_path):
    write_owner(tmp_path, host="node-17", pid=1, heartbeat=time.time() - 3600)
    with RunLock(tmp_path, heartbeat_s=0, stale_s=300) as lock:
        assert lock.owns()
    write_owner(tmp_path, host="node-17", pid=1)  # alive on another node (we cannot see its pid)
    with pytest.raises(RunLockedError, match="host node-17"):
        RunLock(tmp_path, heartbeat_s=0).acquire()


def test_the_same_slurm_job_requeued_takes_over(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "77_3"
    write_owner(tmp_path, host="node-2", pid=123, job_id="77_3")  # the task before its requeue, other node
    assert "requeued" in stale_reason(json.loads((tmp_path / LOCK).read_text()))
    with RunLock(tmp_path, heartbeat_s=0) as lock:
        assert lock.owns()
    write_owner(tmp_path, host="node-2", pid=123, job_id="77_4")  # another task of the array: alive
    with pytest.raises(RunLockedError):
        RunLock(tmp_path, heartbeat_s=0).acquire()


def test_unreadable_lock_is_respected_while_young(tmp_path):
    (tmp_path / LOCK).write_text("{half written")
    with pytest.raises(RunLockedError):
        RunLock(tmp_path, heartbeat_s=0).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / LOCK, (old, old))
    with RunLock(tmp_path, heartbeat_s=0) as lock:
        assert lock.owns()


def test_heartbeat_refreshes_and_a_lost_lock_is_noticed(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0).acquire()
    first = json.loads((tmp_path / LOCK).read_text())["heartbeat"]
    assert lock.beat()
    assert json.loads((tmp_path / LOCK).read_text())["heartbeat"] >= first
    lock.check()  # still ours: no error
    write_owner(tmp_path, token="thief")  # someone took it over (say, after a long stall of ours)
    assert not lock.beat() and lock.lost
    with pytest.raises(RunLockedError, match="taken over"):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "thief"  # never removes another's lock


def test_overwrite_keeps_the_lock_it_runs_under(tmp_path):
    from softclip.config import Config
    from softclip.train import rundir

    cfg = Config.model_validate({"name": "r"})
    run = tmp_path / "r"
    with RunLock(run, heartbeat_s=0) as lock:
        rundir.prepare(run, cfg, overwrite=False)
        (run / rundir.DONE).write_text("{}")
        rundir.prepare(run, cfg, overwrite=True)
        assert lock.owns() and not (run / rundir.DONE).exists()
