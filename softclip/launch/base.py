"""Launcher interface: submit ``fn(*args)`` somewhere, get a :class:`Job` handle back.

Launchers are registered by name in :data:`LAUNCHERS` (``inprocess``, ``processes``, ``slurm``,
``submitit-local``) and built from plain keyword arguments with :func:`make_launcher`. Sweeps start their Optuna
workers through :meth:`Launcher.submit_many` and watch them with :meth:`Launcher.wait`; ablations use
:func:`run_jobs`.
"""

from __future__ import annotations

import abc
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from softclip.registry import Registry

LAUNCHERS: Registry[type[Launcher]] = Registry("launcher.name")

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class JobFailed(RuntimeError):
    """A job raised, was killed or vanished; the message holds the job id and the error (with traceback)."""


class Job(abc.ABC):
    """Handle of one submitted job."""

    job_id: str

    @abc.abstractmethod
    def done(self) -> bool:
        """True once the job finished (successfully or not); never blocks for long."""

    @abc.abstractmethod
    def result(self) -> Any:
        """The job's return value (waits for it); raises :class:`JobFailed` when the job failed."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the job if it is still running."""


class CompletedJob(Job):
    """A job that already ran (in-process): holds its value or its error."""

    def __init__(self, job_id: str, value: Any = None, error: str | None = None) -> None:
        self.job_id = job_id
        self._value = value
        self._error = error

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise JobFailed(f"job {self.job_id}: {self._error}")
        return self._value

    def cancel(self) -> None:
        return None


class Launcher(abc.ABC):
    """Base class. Subclasses register with ``@LAUNCHERS.register(name)``.

    Args:
        workers: jobs the caller keeps in flight at most.
        cpus_per_job: CPU threads each job may use (OMP/MKL/torch threads are set to this).
        cpu_budget: CPUs the launcher may use in all (local launchers; None: every CPU of this machine).
        cluster: submitit cluster settings (``softclip.schema.ClusterConfig``), submitit launchers only.
        folder: where logs and job files go.
        job_name: label for the jobs (sweep or ablation name).
    """

    name: ClassVar[str] = "base"
    #: True when the launcher queues any number of jobs itself (SLURM arrays): callers may submit all at once.
    queues_itself: ClassVar[bool] = False
    #: True when the launcher reads a cluster YAML (``launcher.cluster``): the submitit launchers
    uses_cluster: ClassVar[bool] = False
    #: seconds between state checks in :meth:`wait`
    poll_interval: ClassVar[float] = 0.5

    def __init__(
        self,
        *,
        workers: int = 1,
        cpus_per_job: int = 1,
        cpu_budget: int | None = None,
        cluster: Any = None,
        folder: str | Path = "runs/launch",
        job_name: str = "softclip",
    ) -> None:
        self.workers = max(1, int(workers))
        self.cpus_per_job = max(1, int(cpus_per_job))
        self.cpu_budget = cpu_budget or available_cpus()
        self.cluster = cluster
        self.folder = Path(folder)
        self.job_name = job_name

    @property
    def max_parallel(self) -> int:
        """Jobs that may run at once: ``workers`` (local launchers also cap by the CPU budget)."""
        return self.workers

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        """Start ``fn(*args)`` and return its handle."""

    def submit_many(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Job]:
        """Start ``fn(*args)`` for every tuple (SLURM: one job array)."""
        return [self.submit(fn, *args) for args in args_list]

    def wait(self, jobs: Sequence[Job], timeout: float) -> list[Job]:
        """Block until one of ``jobs`` is done or ``timeout`` seconds pass; returns the done ones."""
        deadline = time.monotonic() + timeout
        while True:
            finished = [job for job in jobs if job.done()]
            if finished or time.monotonic() >= deadline:
                return finished
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:  # noqa: B027 - optional hook, most launchers hold nothing
        """Release resources (jobs already submitted keep running unless cancelled)."""

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def available_cpus() -> int:
    """CPUs this process may use (affinity-aware)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that cap BLAS/OpenMP threads of a job."""
    return {name: str(threads) for name in THREAD_ENV_VARS}


def make_launcher(name: str, **kwargs: Any) -> Launcher:
    """Build the launcher registered as ``name`` (RegistryError naming the choices when unknown); the built-in
    ones register when ``softclip.launch`` is imported, which importing this module already did."""
    return LAUNCHERS.get(name)(**kwargs)


def layered(config: Any, *layers: dict[str, Any]) -> Any:
    """``config`` (a ``launcher:`` section) with each layer's not-None values applied in turn."""
    for layer in layers:
        config = config.model_copy(update={k: v for k, v in layer.items() if v is not None})
    return config


def launcher_for(config: Any, *layers: dict[str, Any], folder: str | Path, job_name: str) -> Launcher:
    """The launcher a ``launcher:`` config section describes (``schema.LauncherConfig``), each of ``layers`` (a
    sweep's or ablation's own section, then the CLI flags) overriding it in turn with its not-None values.

    Submitit launchers read ``cluster`` and put their job files under its ``folder``/``job_name``; the local
    ones under ``folder``.
    """
    from softclip.config import load_cluster

    config = layered(config, *layers)
    cluster = load_cluster(config.cluster) if uses_cluster(config.name) else None
    return make_launcher(
        config.name, workers=config.workers, cpus_per_job=config.cpus_per_job, cpu_budget=config.cpu_budget,
        cluster=cluster, folder=Path(cluster.folder) / job_name if cluster else folder, job_name=job_name,
    )  # fmt: skip


def uses_cluster(name: str) -> bool:
    """Whether the launcher registered as ``name`` takes a cluster YAML (RegistryError when unknown)."""
    return LAUNCHERS.get(name).uses_cluster


@LAUNCHERS.register("inprocess")
class InProcessLauncher(Launcher):
    """Runs each job synchronously in this process (debugging, tests, a single CPU)."""

    name = "inprocess"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count = 0

    @property
    def max_parallel(self) -> int:
        return 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        self._count += 1
        job_id = f"inprocess-{self._count}"
        try:
            return CompletedJob(job_id, value=fn(*args))
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - a failed job is data, the caller decides
            return CompletedJob(job_id, error=f"{type(err).__name__}: {err}\n{traceback.format_exc()}")


@dataclass
class Outcome:
    """What :func:`run_jobs` returns per submitted item: the value, or the error text."""

    args: tuple[Any, ...]
    job_id: str
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_jobs(
    launcher: Launcher,
    fn: Callable[..., Any],
    args_list: Sequence[tuple[Any, ...]],
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``fn(*args)`` for every tuple, keeping ``launcher.max_parallel`` in flight; never raises for a job.

    A launcher that queues itself (SLURM) gets everything at once as one array.
    """
    todo = list(enumerate(args_list))
    outcomes: list[Outcome | None] = [None] * len(todo)
    running: dict[int, Job] = {}
    while todo or running:
        slots = len(todo) if launcher.queues_itself else launcher.max_parallel - len(running)
        if slots > 0 and todo:
            batch, todo = todo[:slots], todo[slots:]
            for (index, _), job in zip(batch, launcher.submit_many(fn, [a for _, a in batch]), strict=True):
                running[index] = job
        for job in launcher.wait(list(running.values()), timeout=5.0):
            index = next(i for i, j in running.items() if j is job)
            del running[index]
            outcome = Outcome(tuple(args_list[index]), job.job_id)
            try:
                outcome.value = job.result()
            except JobFailed as err:
                outcome.error = str(err)
            outcomes[index] = outcome
            if on_done is not None:
                on_done(outcome)
    return [o for o in outcomes if o is not None]
