"""Optuna sweeps from sweep YAML: search space over dotted config keys, sampler, pruner, storage, launcher.

``load_sweep(path, profile)`` -> :class:`SweepSpec`; ``run_sweep(spec, launcher=..., n_trials=..., workers=...)``
runs or resumes it; ``sweep_status(spec)`` reports it. Trial functions: :data:`TRIALS`.
"""

from softclip.sweep.driver import (
    SweepDriver,
    SweepError,
    SweepResult,
    open_study,
    run_sweep,
    sweep_dir,
    target_trials,
)
from softclip.sweep.space import grid_space, ordered_params, suggest
from softclip.sweep.spec import ParamSpec, SweepSpec, load_sweep
from softclip.sweep.status import sweep_status, trial_rows
from softclip.sweep.study import (
    PRUNERS,
    SAMPLERS,
    make_pruner,
    make_sampler,
    make_storage,
    resolve_storage_url,
)
from softclip.sweep.trial import TRIALS, TrialTask, flatten_results, run_trial

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "TRIALS",
    "ParamSpec",
    "SweepDriver",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "TrialTask",
    "flatten_results",
    "grid_space",
    "load_sweep",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "open_study",
    "ordered_params",
    "resolve_storage_url",
    "run_sweep",
    "run_trial",
    "suggest",
    "sweep_dir",
    "sweep_status",
    "target_trials",
    "trial_rows",
]
