"""submitit launchers: SLURM (job arrays, requeue on timeout/preemption, multi-node DDP) and submitit's local.

Every job is wrapped in :class:`ResumableCall`, a ``submitit.helpers.Checkpointable``: on the timeout or
preemption signal submitit calls :meth:`ResumableCall.checkpoint`, which returns the same call as a
``DelayedSubmission``; the requeued job then resumes from the run folder's last checkpoint (the trainer
resumes automatically), so a requeued job ends with the uninterrupted result. A job that SLURM itself requeues
(``scontrol requeue``, node failure) reruns the same pickled call and resumes the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import submitit

from softclip.launch.base import LAUNCHERS, Job, JobFailed, Launcher, thread_env
from softclip.schema import ClusterConfig


def distributed_rank() -> int:
    """Global rank of this process in a multi-task job (0 outside distributed jobs)."""
    return int(os.environ.get("RANK", "0"))


class ResumableCall(submitit.helpers.Checkpointable):
    """``fn(*args)`` as a requeueable submitit job.

    Args:
        fn: the job body; must resume from its own output folder when called again (train does).
        threads: CPU threads per task (OMP/MKL/torch).
        gpus_per_node: GPUs per node; with several tasks each task is pinned to one GPU.
    """

    def __init__(self, fn: Callable[..., Any], threads: int = 1, gpus_per_node: int = 0) -> None:
        self.fn = fn
        self.threads = threads
        self.gpus_per_node = gpus_per_node

    def __call__(self, *args: Any) -> Any:
        os.environ.update(thread_env(self.threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        self._export_distributed()
        return self.fn(*args)

    def _export_distributed(self) -> None:
        """Multi-task jobs: MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for torch's env:// init."""
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=self.gpus_per_node > 0, overwrite=True
            )

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on timeout/preemption: save the running trainer's state (if this process trains)
        and requeue the same call, which resumes from its run folder."""
        trainer = sys.modules.get("softclip.train")  # imported iff this process is training
        if trainer is not None:
            trainer.save_now()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SubmititJob(Job):
    """Adapter from a ``submitit.Job``."""

    def __init__(self, job: submitit.Job) -> None:
        self.job = job
        self.job_id = str(job.job_id)

    def done(self) -> bool:
        return bool(self.job.done())

    def result(self) -> Any:
        """The job's value; for a multi-task (DDP) job, rank 0's."""
        try:
            return self.job.results()[0]
        except Exception as err:  # noqa: BLE001 - FailedJobError, UncompletedJobError, the job's own error
            raise JobFailed(f"job {self.job_id}: {err}") from None

    def cancel(self) -> None:
        self.job.cancel(check=False)


class SubmititLauncher(Launcher):
    """Common part: one executor per launcher (``executor_kind`` slurm or local), jobs wrapped in
    :class:`ResumableCall`."""

    uses_cluster = True
    executor_kind: ClassVar[str] = "slurm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.cluster is None:
            self.cluster = ClusterConfig(executor=self.executor_kind)
        self.folder = Path(self.folder)
        self.executor = self._make_executor()

    def _make_executor(self) -> submitit.Executor:
        """Job files under ``folder/<job id>``; sbatch options (SLURM) or local ones from the cluster file."""
        cluster: ClusterConfig = self.cluster
        folder = self.folder / "%j"
        if self.executor_kind == "local":
            executor = submitit.LocalExecutor(folder=folder, max_num_timeout=cluster.max_num_timeout)
            executor.update_parameters(**cluster.local_parameters())
            return executor
        kwargs: dict[str, Any] = {"max_num_timeout": cluster.max_num_timeout}
        if cluster.python:
            kwargs["python"] = cluster.python
        executor = submitit.SlurmExecutor(folder=folder, **kwargs)
        executor.update_parameters(**cluster.slurm_parameters(self.cpus_per_job, self.workers, self.job_name))
        return executor

    @property
    def max_parallel(self) -> int:
        """SLURM: ``array_parallelism`` (else ``workers``); local: ``workers`` within the CPU budget."""
        if self.executor_kind == "local":
            return max(1, min(self.workers, self.cpu_budget // self.cpus_per_job))
        return self.cluster.array_parallelism or self.workers

    def _wrap(self, fn: Callable[..., Any]) -> ResumableCall:
        cluster: ClusterConfig = self.cluster
        return ResumableCall(fn, cluster.cpus_per_task or self.cpus_per_job, cluster.gpus_per_node)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        return SubmititJob(self.executor.submit(self._wrap(fn), *args))

    def submit_many(self, fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]) -> list[Job]:
        if len(args_list) <= 1:  # an empty batch warns; a single job needs no array
            return [self.submit(fn, *args) for args in args_list]
        call = self._wrap(fn)
        with self.executor.batch():
            jobs = [self.executor.submit(call, *args) for args in args_list]
        return [SubmititJob(job) for job in jobs]


@LAUNCHERS.register("slurm")
class SlurmLauncher(SubmititLauncher):
    """sbatch through submitit: several submissions at once become one job array (``%array_parallelism``)."""

    name = "slurm"
    queues_itself = True
    poll_interval = 2.0


@LAUNCHERS.register("submitit-local")
class SubmititLocalLauncher(SubmititLauncher):
    """submitit's LocalExecutor: same job files and requeue logic as SLURM, run as local subprocesses."""

    name = "submitit-local"
    executor_kind = "local"

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        try:
            return super().submit(fn, *args)
        except Exception as err:  # noqa: BLE001
            raise JobFailed(f"submitit-local could not start the job: {err}") from err
