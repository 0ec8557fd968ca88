"""Worker pool on SLURM (or submitit's local executor): long-lived array tasks pull jobs from a file queue.

The ``slurm`` launcher starts one array task per job, so every trial pays the job start, a fresh Python and
the torch import (~5 s on the CI cluster, ~30% of a smoke trial). ``slurm-pool`` pays that once per worker:

- the driver writes each job as JSON (``tasks/<id>.json``: the function's import path and its arguments,
  dataclasses included) and enqueues it with an empty marker ``queue/<id>``;
- a worker claims a job by renaming its marker to ``claimed/<id>@<worker>`` (atomic: exactly one worker
  wins), runs it in its warm interpreter and writes ``results/<id>.json`` atomically;
- the driver keeps ``min(max_parallel, unfinished jobs)`` workers alive (one job array per top-up) and fails
  the claimed jobs of a worker whose SLURM job ended (cancelled, node failure, out of memory);
- a worker that is requeued (timeout or preemption through :class:`ResumableCall`, or ``scontrol requeue``)
  keeps its SLURM job id, hence its worker id, and first resumes the jobs it had claimed: the trainer resumes
  from the run folder's checkpoint, so the job ends with the uninterrupted result;
- a worker exits when the queue is empty and the driver has closed the pool, after ``pool_idle_s`` seconds
  without work, or (between jobs) once it has lived ``pool_lifetime_min``.

The queue and its codec live in :mod:`softclip.launch.queue`: nothing is unpickled from it. Jobs must be
importable module-level functions.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from softclip.config import ConfigError
from softclip.launch.base import LAUNCHERS, Job, JobFailed
from softclip.launch.cluster import ClusterConfig
from softclip.launch.queue import TaskQueue, decode, encode, fn_ref, resolve_fn
from softclip.launch.submitit_launch import SubmititLauncher

# ------------------------------------------------------------------------------------------- the worker


def worker_id() -> str:
    """This worker's id: its submitit job id (``<array>_<index>`` on SLURM), stable across requeues."""
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job (tests, manual runs)
        return f"{socket.gethostname()}-{os.getpid()}"


def run_task(queue: TaskQueue, task_id: str, worker: str) -> bool:
    """Run one claimed job and write its result; True when it succeeded."""
    t0 = time.perf_counter()
    try:
        spec = queue.read_task(task_id)
        value = resolve_fn(spec["fn"])(*decode(spec["args"]))
        payload: dict[str, Any] = {"ok": True, "value": encode(value)}
    except UncompletedJobError:  # the job timed out for good: submitit ends it
        raise
    except Exception as err:  # noqa: BLE001 - the failure is the job's result, the worker goes on
        payload = {"ok": False, "error": f"{type(err).__name__}: {err}\n{traceback.format_exc()}"}
    payload.update(worker=worker, seconds=round(time.perf_counter() - t0, 3))
    queue.finish(task_id, worker, payload)
    _tidy()
    return payload["ok"]


def _tidy() -> None:
    """Between jobs: free what the last one left (Python garbage, cached GPU blocks)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _poll_wait(idle: float, poll_s: float) -> float:
    """Seconds to sleep before the next queue check: 0.05 s in the first 5 s without work (a sweep driver sends
    the next trial within a fraction of a second), then doubling up to ``poll_s``."""
    return min(poll_s, 0.05 * 2 ** max(0.0, idle - 5.0))


def serve(folder: str, idle_s: float = 60.0, poll_s: float = 1.0, lifetime_s: float | None = None) -> dict:
    """Body of a pool worker: resume own claims, then claim and run jobs until told or timed out to stop.

    Returns ``{"worker", "tasks", "failed", "exit"}`` with ``exit`` one of closed, idle, lifetime.
    """
    queue, worker = TaskQueue(folder), worker_id()
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        # the driver cancels a local worker with SIGTERM (SIGINT may be ignored, see cancel_worker), which
        # submitit's controller forwards here and submitit's job environment would only log ("bypass", for
        # SLURM's pre-timeout warning): on a local executor it must end the worker
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    started = time.monotonic()
    done = failed = 0
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    for task_id in queue.open_claims(worker):  # requeued: finish what this worker had started
        queue.beat(worker, task=task_id, tasks=done, resumed=True)
        ok = run_task(queue, task_id, worker)
        done, failed = done + 1, failed + (not ok)
    idle_since, reason = time.monotonic(), "closed"
    while True:
        if lifetime_s is not None and time.monotonic() - started > lifetime_s:
            reason = "lifetime"
            break
        task_id = queue.claim(worker)
        if task_id is None:
            if queue.closed:
                break
            if time.monotonic() - idle_since > idle_s:
                reason = "idle"
                break
            time.sleep(_poll_wait(time.monotonic() - idle_since, poll_s))
            continue
        if threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        queue.beat(worker, task=task_id, tasks=done)
        ok = run_task(queue, task_id, worker)
        done, failed = done + 1, failed + (not ok)
        idle_since = time.monotonic()
        queue.beat(worker, task=None, tasks=done)
    queue.beat(worker, task=None, tasks=done, exit=reason)
    return {"worker": worker, "tasks": done, "failed": failed, "exit": reason}


# ------------------------------------------------------------------------------------------- the driver


class PoolJob(Job):
    """One job in the pool's queue: done when its result file exists."""

    def __init__(self, launcher: PoolLauncher, task_id: str) -> None:
        self.launcher, self.task_id = launcher, task_id
        self.job_id = f"{launcher.queue.folder.name}/{task_id}"
        self._payload: dict[str, Any] | None = None

    def done(self) -> bool:
        if self._payload is None and self.launcher.queue.has_result(self.task_id):
            self._payload = self.launcher.queue.result(self.task_id)
        return self._payload is not None

    def result(self) -> Any:
        while not self.done():
            self.launcher.wait([self], timeout=60.0)
        assert self._payload is not None
        if not self._payload.get("ok"):
            worker = self._payload.get("worker", "?")
            raise JobFailed(f"job {self.job_id} (worker {worker}): {self._payload.get('error')}")
        return decode(self._payload.get("value"))

    @property
    def worker(self) -> str | None:
        """The worker running this job now (None when queued or finished)."""
        return self.launcher.queue.claims().get(self.task_id)

    def cancel(self) -> None:
        if self.done() or self.launcher.queue.withdraw(self.task_id):
            return
        worker = self.worker
        if worker is not None:  # it runs: stop its worker; the driver fails its claim when the job ends
            self.launcher.cancel_worker(worker)


class PoolLauncher(SubmititLauncher):
    """Worker pool through submitit (``executor_kind`` slurm or local); see the module docstring. Shares the
    executor, the cluster file and ``max_parallel`` with the one-job-per-task submitit launchers."""

    name = "slurm-pool"
    queues_itself = True
    poll_interval = 0.1
    #: seconds between checks of the workers' SLURM states (submitit caches them itself)
    reap_interval = 2.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cluster: ClusterConfig = self.cluster
        if cluster.nodes * cluster.tasks_per_node > 1:
            raise ConfigError(f"launcher {self.name!r} runs single-task workers; cluster {cluster.name!r} asks for "
                              f"{cluster.nodes}x{cluster.tasks_per_node} tasks per job (use launcher 'slurm')")  # fmt: skip
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.queue = TaskQueue(self.folder / f"pool-{stamp}-{uuid.uuid4().hex[:6]}").create()
        self._count = 0
        self._workers: dict[str, submitit.Job] = {}  # worker id -> its submitit job (live or ended)
        self._reaped: set[str] = set()
        self._unfinished: dict[str, PoolJob] = {}
        self._last_reap = 0.0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        return self.submit_many(fn, [args])[0]

    def submit_many(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Job]:
        try:
            ref = fn_ref(fn)
            encoded = [encode(tuple(args)) for args in args_list]
        except (TypeError, ValueError) as err:
            raise JobFailed(f"{self.name}: {err}") from err
        jobs = []
        for args in encoded:
            self._count += 1
            task_id = f"{self._count:06d}"
            self.queue.put(task_id, ref, args)
            job = PoolJob(self, task_id)
            self._unfinished[task_id] = job
            jobs.append(job)
        self._scale()
        return jobs

    def live_workers(self) -> list[str]:
        return [w for w, job in self._workers.items() if w not in self._reaped and not job.done()]

    def _scale(self) -> None:
        """Start workers until ``min(max_parallel, unfinished jobs)`` are alive (one array per top-up)."""
        self._unfinished = {k: j for k, j in self._unfinished.items() if not j.done()}
        need = min(self.max_parallel, len(self._unfinished)) - len(self.live_workers())
        if need <= 0:
            return
        cluster: ClusterConfig = self.cluster
        call = self._wrap(serve)
        lifetime = 60.0 * (cluster.pool_lifetime_min or cluster.timeout_min / 2)
        args = (str(self.queue.folder), cluster.pool_idle_s, cluster.pool_poll_s, lifetime)
        if need == 1:
            started = [self.executor.submit(call, *args)]
        else:
            with self.executor.batch():
                started = [self.executor.submit(call, *args) for _ in range(need)]
        for job in started:
            self._workers[str(job.job_id)] = job

    def _reap(self) -> None:
        """Fail the claims of workers whose job ended; top the pool up."""
        for worker, job in self._workers.items():
            if worker in self._reaped or not job.done():
                continue
            self._reaped.add(worker)
            state = str(getattr(job, "state", "ENDED"))
            log_file = getattr(job.paths, "stdout", "")
            self.queue.fail_claims(worker, f"worker job {worker} ended ({state}) while running this job; "
                                           f"log: {log_file}")  # fmt: skip
        self._scale()

    def tick(self) -> None:
        if time.monotonic() - self._last_reap >= self.reap_interval:
            self._last_reap = time.monotonic()
            self._reap()

    def cancel_worker(self, worker: str) -> None:
        job = self._workers.get(worker)
        if job is None:
            return
        job.cancel(check=False)  # scancel on SLURM; SIGINT to submitit's local controller
        # A process started in the background without job control (`nohup softclip ... &`, CI scripts) inherits
        # SIGINT as ignored, so the local controller would not notice; SIGTERM it, which it forwards to its tasks.
        process = getattr(job, "_process", None)
        if process is not None and process.poll() is None:
            process.terminate()

    def close(self) -> None:
        """Tell the workers to exit once the queue is empty (jobs already queued still run)."""
        self.queue.close()


@LAUNCHERS.register("slurm-pool")
class SlurmPoolLauncher(PoolLauncher):
    """Worker pool as SLURM array tasks (``array_parallelism`` at once)."""

    name = "slurm-pool"


@LAUNCHERS.register("submitit-local-pool")
class LocalPoolLauncher(PoolLauncher):
    """The same pool with submitit's LocalExecutor (debugging, tests without SLURM)."""

    name = "submitit-local-pool"
    executor_kind = "local"
