"""Optuna sweeps from sweep YAML: search space over dotted config keys, sampler, pruner, storage, launcher.

``load_sweep(path, profile)`` -> :class:`SweepSpec`; ``run_sweep(spec, launcher=..., n_trials=..., workers=...)``
runs or resumes it as Optuna workers on the study storage (:func:`run_worker`); ``sweep_status(spec)`` reports
it. Register trial functions in :data:`TRIALS`, samplers in :data:`SAMPLERS`, pruners in :data:`PRUNERS`.
"""

from softclip.sweep.driver import SweepError, SweepResult, run_sweep, sweep_status
from softclip.sweep.study import PRUNERS, SAMPLERS, open_study
from softclip.sweep.worker import TRIALS, WorkerTask, run_worker
from softclip.sweep_spec import SweepSpec, load_sweep, sweep_dir

__all__ = ["PRUNERS", "SAMPLERS", "TRIALS", "SweepError", "SweepResult", "SweepSpec", "WorkerTask", "load_sweep",
           "open_study", "run_sweep", "run_worker", "sweep_dir", "sweep_status"]  # fmt: skip
