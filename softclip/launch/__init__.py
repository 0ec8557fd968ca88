"""Launchers: where jobs run. ``Launcher.map(fn, args_list)`` runs ``fn(*args)`` per tuple as ONE submitit job
array (``slurm``; ``processes`` / ``submitit-local``: submitit's LocalExecutor, one subprocess per task) or in
this process (``inprocess``, for tests and debugging), waits for it and returns an :class:`Outcome` per tuple,
in order; a failed task is data, never an exception. The engines do the scheduling: callers make as many tasks
as may run at once (:attr:`Launcher.max_parallel`), each doing its share of the work.

Every submitit task is a :class:`ResumableCall` (``submitit.helpers.Checkpointable``): on the timeout or
preemption signal it saves the running trainer and requeues the same call, which resumes from its run folders
(finished runs are skipped, the trainer resumes from its last checkpoint); a task SLURM itself requeues
(``scontrol requeue``, node failure) reruns the same pickled call and resumes the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import submitit

from softclip.registry import Registry
from softclip.schema import ClusterConfig, LauncherConfig

LAUNCHERS: Registry[type[Launcher]] = Registry("launcher.name")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # `processes`: a laptop has no wall-time limit


@dataclass
class Outcome:
    """What :meth:`Launcher.map` returns per argument tuple: the value, or the error text."""

    args: tuple[Any, ...]
    job_id: str
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def distributed_rank() -> int:
    """Global rank of this process in a multi-task job (0 outside distributed jobs)."""
    return int(os.environ.get("RANK", "0"))


def available_cpus() -> int:
    """CPUs this process may use (affinity-aware where the OS has it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """OMP/MKL/... thread caps in ``os.environ`` while jobs start (a subprocess inherits them at its start)."""
    saved = {k: os.environ.get(k) for k in THREAD_ENV_VARS}
    os.environ.update({k: str(threads) for k in THREAD_ENV_VARS})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class ResumableCall(submitit.helpers.Checkpointable):
    """``fn(*args)`` as a requeueable submitit task (``fn`` resumes from its own output folders when called
    again); ``threads`` CPU threads per task; with several tasks per job each is pinned to one GPU."""

    def __init__(self, fn: Callable[..., Any], threads: int = 1, gpus_per_node: int = 0) -> None:
        self.fn, self.threads, self.gpus_per_node = fn, threads, gpus_per_node

    def __call__(self, *args: Any) -> Any:
        os.environ.update({k: str(self.threads) for k in THREAD_ENV_VARS})
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        if submitit.JobEnvironment().num_tasks > 1:  # MASTER_ADDR/PORT, RANK, WORLD_SIZE for env:// init
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=self.gpus_per_node > 0, overwrite=True
            )
        return self.fn(*args)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Timeout/preemption: save the running trainer's state (if this process trains), requeue the call."""
        trainer = sys.modules.get("softclip.train")  # imported iff this process is training
        if trainer is not None:
            trainer.save_now()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class Launcher:
    """Base class; subclasses register with ``@LAUNCHERS.register(name)`` and implement :meth:`map`.

    Args:
        workers: tasks that may run at once.
        cpus_per_job: CPU threads each task may use (OMP/MKL/torch threads are set to this).
        cpu_budget: CPUs the local launchers may use in all (None: every CPU this process may use).
        cluster: submitit cluster settings, submitit launchers only.
        folder: where job files and logs go.
        job_name: label for the jobs (sweep or ablation name).
    """

    name: ClassVar[str] = "base"
    uses_cluster: ClassVar[bool] = False  # whether it reads a cluster YAML (``launcher.cluster``)

    def __init__(self, *, workers: int = 1, cpus_per_job: int = 1, cpu_budget: int | None = None,
                 cluster: ClusterConfig | None = None, folder: str | Path = "runs/launch",
                 job_name: str = "softclip") -> None:  # fmt: skip
        self.workers, self.cpus_per_job = max(1, int(workers)), max(1, int(cpus_per_job))
        self.cpu_budget = cpu_budget or available_cpus()
        self.cluster, self.folder, self.job_name = cluster, Path(folder), job_name

    @property
    def max_parallel(self) -> int:
        """Tasks that run at once: ``workers``, capped by the CPU budget on this machine."""
        return max(1, min(self.workers, self.cpu_budget // self.cpus_per_job))

    def map(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        """Run ``fn(*args)`` for every tuple, wait for all; one :class:`Outcome` per tuple, in order."""
        raise NotImplementedError


@LAUNCHERS.register("inprocess")
class InProcessLauncher(Launcher):
    """Runs the tasks one after the other in this process (tests, debugging, a single CPU)."""

    name = "inprocess"

    @property
    def max_parallel(self) -> int:
        return 1

    def map(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        outcomes = [Outcome(tuple(args), f"inprocess-{i}") for i, args in enumerate(args_list)]
        for outcome in outcomes:
            try:
                outcome.value = fn(*outcome.args)
            except Exception as err:  # noqa: BLE001 - a failed task is data, the caller decides
                outcome.error = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
        return outcomes


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    """sbatch through submitit: :meth:`map` submits one job array (``%array_parallelism``) of
    :class:`ResumableCall` tasks, requeued on timeout/preemption."""

    name = "slurm"
    uses_cluster = True
    executor_kind: ClassVar[str] = "slurm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = self.cluster or ClusterConfig(executor=self.executor_kind)  # type: ignore[call-arg]

    @property
    def max_parallel(self) -> int:
        """SLURM: ``array_parallelism`` (else ``workers``); local: ``workers`` within the CPU budget."""
        if self.executor_kind == "local":
            return super().max_parallel
        return self.cluster.array_parallelism or self.workers

    def executor(self) -> submitit.Executor:
        """Job files under ``folder/<job id>``; sbatch options (SLURM) or local ones from the cluster file."""
        cluster, folder = self.cluster, self.folder / "%j"
        if self.executor_kind == "local":
            executor = submitit.LocalExecutor(folder=folder, max_num_timeout=cluster.max_num_timeout)
            executor.update_parameters(**cluster.local_parameters())
            return executor
        extra = {"python": cluster.python} if cluster.python else {}
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cluster.max_num_timeout, **extra)
        executor.update_parameters(**cluster.slurm_parameters(self.cpus_per_job, self.workers, self.job_name))
        return executor

    def map(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        if not args_list:
            return []
        call = ResumableCall(fn, self.cluster.cpus_per_task or self.cpus_per_job, self.cluster.gpus_per_node)
        executor = self.executor()
        with thread_env(self.cpus_per_job), executor.batch():
            jobs = [executor.submit(call, *args) for args in args_list]
        outcomes = [Outcome(tuple(args), str(job.job_id)) for args, job in zip(args_list, jobs, strict=True)]
        for outcome, job in zip(outcomes, jobs, strict=True):
            try:
                outcome.value = job.results()[0]  # a multi-task (DDP) job: rank 0's value
            except Exception as err:  # noqa: BLE001 - FailedJobError, UncompletedJobError, the task's own error
                outcome.error = f"job {job.job_id}: {err}"
        with contextlib.suppress(OSError):  # submitit also makes the folder literally named %j, and leaves it empty
            (self.folder / "%j").rmdir()
        return outcomes


@LAUNCHERS.register("submitit-local")
class SubmititLocalLauncher(SlurmLauncher):
    """submitit's LocalExecutor with a cluster file's settings (time limit, tasks per job): SLURM's twin."""

    name = "submitit-local"
    executor_kind = "local"


@LAUNCHERS.register("processes")
class ProcessesLauncher(SubmititLocalLauncher):
    """submitit's LocalExecutor on this machine, no cluster file: one subprocess per task, as many as the CPU
    budget allows (``cpu_budget // cpus_per_job``), no time limit."""

    name = "processes"
    uses_cluster = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs["cluster"] = kwargs.get("cluster") or ClusterConfig(executor="local", timeout_min=LOCAL_TIMEOUT_MIN)
        super().__init__(**kwargs)


def make_launcher(name: str, **kwargs: Any) -> Launcher:
    """Build the launcher registered as ``name`` (RegistryError naming the choices when unknown)."""
    return LAUNCHERS.get(name)(**kwargs)


def launcher_for(config: LauncherConfig, *layers: dict[str, Any], folder: str | Path, job_name: str) -> Launcher:
    """The launcher a ``launcher:`` config section describes, each of ``layers`` (a sweep's or ablation's own
    section, then the CLI flags) overriding it with its not-None values. Launchers with a cluster file put
    their job files under its ``folder``/``job_name``, the others under ``folder``."""
    from softclip.config import load_cluster

    for layer in layers:
        config = config.model_copy(update={k: v for k, v in layer.items() if v is not None})
    cluster = load_cluster(config.cluster) if LAUNCHERS.get(config.name).uses_cluster else None
    return make_launcher(
        config.name, workers=config.workers, cpus_per_job=config.cpus_per_job, cpu_budget=config.cpu_budget,
        cluster=cluster, folder=Path(cluster.folder) / job_name if cluster else folder, job_name=job_name,
    )  # fmt: skip
