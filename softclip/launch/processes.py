"""Local processes in parallel within a CPU budget.

At most ``cpu_budget // cpus_per_job`` jobs run at once, each with ``cpus_per_job`` threads (OMP/MKL env vars
set before the process starts, so torch picks them up). Worker processes (spawned, so nothing leaks from the
parent) are reused from job to job: the seconds a fresh Python spends importing torch are paid once per worker,
not once per trial. A job that crashes or is cancelled takes its worker with it and fails alone; the next job
gets a fresh worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection as mpc
import multiprocessing.util as mpu
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from softclip.launch.base import LAUNCHERS, Job, JobFailed, Launcher, thread_env

_ENV_LOCK = threading.Lock()


def _run(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which decides
        return ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Without it a worker in the middle of a training job outlives a killed driver, and a re-run of the driver
    trains the same run folder twice. Elsewhere the worker still leaves at its next message (a closed pipe).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker(conn: mpc.Connection, threads: int, parent_pid: int | None = None) -> None:
    """Body of a worker process: run (fn, args) messages until None or the parent goes away."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        # torch takes its thread count from OMP_NUM_THREADS when the job imports it; an already imported
        # torch (an earlier job) is told again, in case a job changed it.
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        reply = _run(*message)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable return value
            conn.send(("error", f"could not send the job's result back: {type(err).__name__}: {err}"))


class _Worker:
    def __init__(self, process: mp.process.BaseProcess, conn: mpc.Connection) -> None:
        self.process, self.conn = process, conn

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the process to leave (it is killed after ``timeout`` s), then close the pipe; a dead one is reaped."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.kill(timeout)
        self.conn.close()

    def kill(self, timeout: float) -> None:
        """Wait ``timeout`` s for the process to end, then kill it."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _shutdown(workers: list[_Worker]) -> None:
    while workers:
        workers.pop().stop()


class ProcessJob(Job):
    """A job running in a worker process."""

    def __init__(self, job_id: str, worker: _Worker, release: Callable[[_Worker, bool], None]) -> None:
        self.job_id = job_id
        self.worker = worker
        self._release = release
        self._message: tuple[str, Any] | None = None
        self._lost = False

    @property
    def sentinel(self) -> int:
        return self.worker.process.sentinel

    def _receive(self) -> None:
        if self._message is not None or self._lost:
            return
        try:
            if self.worker.conn.poll():
                self._message = self.worker.conn.recv()
                self._release(self.worker, True)
            elif not self.worker.process.is_alive():
                self._lost = True
        except (EOFError, OSError):  # the worker's end closed: it died mid-job
            self._lost = True
        if self._lost:
            self._release(self.worker, False)

    def done(self) -> bool:
        self._receive()
        return self._message is not None or self._lost

    def result(self) -> Any:
        while not self.done():
            mpc.wait([self.worker.conn, self.sentinel])
        if self._message is None:
            self.worker.process.join(30)
            code = self.worker.process.exitcode
            raise JobFailed(f"job {self.job_id}: process exited with code {code} without a result")
        status, payload = self._message
        if status != "ok":
            raise JobFailed(f"job {self.job_id}: {payload}")
        return payload

    def cancel(self) -> None:
        if not self.done() and self.worker.process.is_alive():
            self.worker.process.terminate()
            self.worker.kill(10)


@LAUNCHERS.register("processes")
class ProcessLauncher(Launcher):
    """Parallel local worker processes (spawn start method), reused across jobs."""

    name = "processes"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ctx = mp.get_context("spawn")
        self._count = 0
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        # stop idle workers before multiprocessing joins its children at interpreter exit
        mpu.Finalize(self, _shutdown, args=(self._all,), exitpriority=10)

    @property
    def max_parallel(self) -> int:
        return max(1, min(self.workers, self.cpu_budget // self.cpus_per_job))

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker, args=(child, self.cpus_per_job, os.getpid()), name=f"{self.job_name}-worker")
        with _ENV_LOCK:  # the child inherits the environment at start(): cap its threads there
            saved = {k: os.environ.get(k) for k in thread_env(1)}
            os.environ.update(thread_env(self.cpus_per_job))
            try:
                process.start()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        child.close()
        worker = _Worker(process, parent)
        self._all.append(worker)
        return worker

    def _release(self, worker: _Worker, reusable: bool) -> None:
        if not reusable or not worker.process.is_alive():
            self._retire(worker)
        else:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.stop()
        if worker in self._all:
            self._all.remove(worker)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        self._count += 1
        worker = None
        while self._idle and worker is None:
            candidate = self._idle.pop()
            worker = candidate if candidate.process.is_alive() else self._retire(candidate)
        worker = worker or self._spawn()
        try:
            worker.conn.send((fn, args))
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable argument
            self._retire(worker)
            raise JobFailed(f"could not send the job to a worker process: {type(err).__name__}: {err}") from err
        return ProcessJob(f"pid-{worker.process.pid}-{self._count}", worker, self._release)

    def wait(self, jobs: Sequence[Job], timeout: float) -> list[Job]:
        """Wake as soon as any job's worker answers or exits (no polling delay)."""
        finished = [job for job in jobs if job.done()]
        if finished or not jobs:
            return finished
        handles: list[Any] = []
        for job in jobs:
            if isinstance(job, ProcessJob):
                handles += [job.worker.conn, job.sentinel]
        mpc.wait(handles, timeout=timeout)
        return [job for job in jobs if job.done()]

    def close(self) -> None:
        _shutdown(self._all)
        self._idle.clear()
