"""Launchers: where jobs run. A launcher maps ``fn`` over a list of argument tuples as ONE submitit job array
(``slurm``; ``processes`` / ``submitit-local``: submitit's LocalExecutor, one subprocess per task) or in this
process (``inprocess``, for tests and debugging), and waits for it. The engines do the scheduling: callers make
as many tasks as may run at once (:attr:`Launcher.max_parallel`), each doing its share of the work."""

from softclip.launch.base import (
    LAUNCHERS,
    THREAD_ENV_VARS,
    JobFailed,
    Launcher,
    Outcome,
    ResumableCall,
    distributed_rank,
    launcher_for,
    layered,
    make_launcher,
    uses_cluster,
)

__all__ = ["LAUNCHERS", "THREAD_ENV_VARS", "JobFailed", "Launcher", "Outcome", "ResumableCall", "distributed_rank",
           "launcher_for", "layered", "make_launcher", "uses_cluster"]  # fmt: skip
