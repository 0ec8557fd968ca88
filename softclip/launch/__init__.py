"""Launchers: where jobs run. ``inprocess``, ``processes`` (local, within a CPU budget), ``slurm`` (submitit,
job arrays, requeue) and its ``submitit-local`` twin. See :func:`make_launcher` and clusters/example.yaml."""

from softclip.launch import processes, submitit_launch  # noqa: F401  - register the launchers
from softclip.launch.base import (
    LAUNCHERS,
    THREAD_ENV_VARS,
    CompletedJob,
    InProcessLauncher,
    Job,
    JobFailed,
    Launcher,
    Outcome,
    available_cpus,
    launcher_for,
    layered,
    list_launchers,
    make_launcher,
    run_jobs,
    thread_env,
    uses_cluster,
)
from softclip.launch.cluster import ClusterConfig, load_cluster
from softclip.launch.submitit_launch import ResumableCall, distributed_rank

__all__ = [
    "LAUNCHERS",
    "THREAD_ENV_VARS",
    "ClusterConfig",
    "CompletedJob",
    "InProcessLauncher",
    "Job",
    "JobFailed",
    "Launcher",
    "Outcome",
    "ResumableCall",
    "available_cpus",
    "launcher_for",
    "layered",
    "distributed_rank",
    "list_launchers",
    "load_cluster",
    "make_launcher",
    "run_jobs",
    "thread_env",
    "uses_cluster",
]
