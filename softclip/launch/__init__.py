"""Launchers: where jobs run. ``inprocess``, ``processes`` (local, within a CPU budget), ``slurm`` (submitit,
job arrays, requeue) and its ``submitit-local`` twin. See :func:`launcher_for` and clusters/example.yaml."""

from softclip.launch import processes, submitit_launch  # noqa: F401  - register the launchers
from softclip.launch.base import (
    LAUNCHERS,
    THREAD_ENV_VARS,
    Job,
    JobFailed,
    Launcher,
    Outcome,
    launcher_for,
    layered,
    make_launcher,
    run_jobs,
    uses_cluster,
)
from softclip.launch.submitit_launch import ResumableCall, distributed_rank

__all__ = ["LAUNCHERS", "THREAD_ENV_VARS", "Job", "JobFailed", "Launcher", "Outcome", "ResumableCall", "distributed_rank",
           "launcher_for", "layered", "make_launcher", "run_jobs", "uses_cluster"]  # fmt: skip
