"""One trial as a job: the worker side of a sweep (runs wherever the launcher puts it).

:func:`run_trial` connects to the study's storage, keeps the trial's heartbeat, runs the trial function once
per training seed, reports intermediate values to the pruner (``trial.report`` / ``should_prune``), and tells
the study the outcome itself, so that results land even when the sweep driver was killed meanwhile. A trial
function that raises is recorded as FAIL with its error in the trial's user attributes; the sweep goes on.

Trial functions live in :data:`TRIALS` (``train``: the real train + eval) or are named ``module:function``.
Signature: ``fn(cfg: Config, run_dir: Path, report: Report) -> {metric: value}``.
"""

from __future__ import annotations

import importlib
import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from softclip import runfiles
from softclip.config import Config
from softclip.launch.submitit_launch import distributed_rank
from softclip.registry import Registry
from softclip.sweep.study import Heartbeat, make_pruner, make_storage, quiet_optuna

log = logging.getLogger("softclip.sweep")

Report = Callable[[int, dict[str, float]], None]
TrialFn = Callable[[Config, Path, Report], dict[str, float]]
TRIALS: Registry[TrialFn] = Registry("sweep.trial")
ERROR_ATTR = "error"
TRACEBACK_ATTR = "traceback"


class TrialAbandoned(RuntimeError):
    """The trial was declared stale (and re-enqueued) while this worker ran it: stop, the retry takes over."""


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs, as plain data (pickled to SLURM jobs)."""

    storage_url: str
    study_name: str
    trial_id: int
    number: int
    run_key: int
    params: dict[str, Any]
    configs: list[dict[str, Any]]  # one resolved run config per training seed
    run_dirs: list[str]
    objectives: list[str]
    prune_metric: str
    pruner: str = "none"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    trial_fn: str = "train"
    heartbeat_interval: int = 30
    grace_period: int = 90
    max_retry: int = 3


def resolve_trial_fn(name: str) -> TrialFn:
    """A registered trial function, or ``package.module:function`` (imported)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    return TRIALS.get(name)


def flatten_results(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{benchmark: {metric: v}}`` -> ``{"benchmark/metric": v}`` (numbers only)."""
    flat: dict[str, float] = {}
    for bench, metrics in results.items():
        for key, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{bench}/{key}"] = float(value)
    return flat


class _Reporter:
    """``report(step, metrics)`` for the first seed: intermediate value, prune check, stale check."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, metric: str, active: bool, pruning: bool) -> None:
        self.study, self.trial, self.metric = study, trial, metric
        self.active = active  # intermediate values are recorded for the first seed only
        self.pruning = pruning
        self.reported = 0

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        state = self.study._storage.get_trial(self.trial._trial_id).state
        if state != TrialState.RUNNING:
            raise TrialAbandoned(f"trial {self.trial.number} is {state.name} in the study")
        if not self.active or self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return
        self.trial.report(value, step)
        self.reported += 1
        if self.pruning and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.metric}={value:.4g})")


class _SilentReporter:
    """Non-zero ranks: same attributes as the real reporter (so every rank builds the same evaluation hook and
    meets the trainer's barriers), reports nothing."""

    def __init__(self, metric: str, pruning: bool) -> None:
        self.metric, self.active, self.pruning = metric, True, pruning

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        return None


def _objective_values(per_seed: list[dict[str, float]], objectives: list[str]) -> list[float]:
    values = []
    for metric in objectives:
        missing = [i for i, m in enumerate(per_seed) if metric not in m]
        if missing:
            known = ", ".join(sorted(per_seed[missing[0]])) or "none"
            raise KeyError(f"objective metric {metric!r} not in the trial's results (got: {known})")
        values.append(sum(m[metric] for m in per_seed) / len(per_seed))
    return values


def run_trial(task: TrialTask) -> dict[str, Any]:
    """Run one trial (worker side); returns ``{"number", "state", "values"|"error"}`` and never raises for a
    failure of the trial itself (it is recorded in the study)."""
    fn = resolve_trial_fn(task.trial_fn)
    if distributed_rank() != 0:  # other ranks of a multi-task job train; rank 0 talks to the study
        for cfg, run_dir in zip(task.configs, task.run_dirs, strict=True):
            fn(Config.model_validate(cfg), Path(run_dir), _SilentReporter(task.prune_metric, task.pruner != "none"))
        return {"number": task.number, "state": "RANK"}
    storage = make_storage(task.storage_url, task.heartbeat_interval, task.grace_period, task.max_retry, worker=True)
    study = optuna.load_study(
        study_name=task.study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
        pruner=make_pruner(task.pruner, task.pruner_options),
    )
    trial = optuna.trial.Trial(study, task.trial_id)
    if storage.get_trial(task.trial_id).state != TrialState.RUNNING:
        return {"number": task.number, "state": "ABANDONED"}
    with Heartbeat(storage, task.heartbeat_interval, [task.trial_id]), quiet_optuna():
        return _execute(task, fn, study, trial)


def _execute(task: TrialTask, fn: TrialFn, study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    out: dict[str, Any] = {"number": task.number}
    try:
        per_seed = []
        for i, (cfg, run_dir) in enumerate(zip(task.configs, task.run_dirs, strict=True)):
            reporter = _Reporter(study, trial, task.prune_metric, active=i == 0, pruning=task.pruner != "none")
            per_seed.append(fn(Config.model_validate(cfg), Path(run_dir), reporter))
        values = _objective_values(per_seed, task.objectives)
        trial.set_user_attr("metrics", {k: v for k, v in per_seed[0].items() if isinstance(v, float)})
        study.tell(trial, values)
        out.update(state="COMPLETE", values=values)
    except optuna.TrialPruned as err:
        try:
            study.tell(trial, state=TrialState.PRUNED)
            out.update(state="PRUNED", message=str(err))
        except optuna.exceptions.UpdateFinishedTrialError:
            out.update(state="ABANDONED", message="pruned after the study had failed the trial as stale")
    except (TrialAbandoned, optuna.exceptions.UpdateFinishedTrialError) as err:
        out.update(state="ABANDONED", message=str(err))
    except Exception as err:  # noqa: BLE001 - the failure is data: recorded, and the sweep goes on
        message = f"{type(err).__name__}: {err}"
        log.error("trial %d failed: %s", task.number, message)
        try:
            trial.set_user_attr(ERROR_ATTR, message[:2000])
            trial.set_user_attr(TRACEBACK_ATTR, traceback.format_exc()[-4000:])
            study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        out.update(state="FAIL", error=message)
    return out


# ------------------------------------------------------------------------------------------ the real trial


@TRIALS.register("noop")
def noop_trial(cfg: Config, run_dir: Path, report: Report) -> dict[str, float]:
    """No training: checks the plumbing (storage, launcher, heartbeats) and measures launch overhead.

    Reports and returns ``noop/value`` = β + τ + λ + µ of the trial's config, so samplers have a signal.
    """
    value = cfg.loss.beta + cfg.loss.tau + cfg.loss.soft_weight + cfg.loss.re_weight
    report(1, {"noop/value": value})
    return {"noop/value": value}


@TRIALS.register("train")
def train_trial(cfg: Config, run_dir: Path, report: Report) -> dict[str, float]:
    """Train (resuming from ``run_dir``), evaluating every ``train.eval_every`` steps for the pruner, then run
    the evaluation suite; returns the flat ``benchmark/metric`` results."""
    from softclip.evaluation import evaluate_checkpoint
    from softclip.evaluation.hooks import periodic_evaluator
    from softclip.train import train

    if not (run_dir / runfiles.DONE).is_file():
        metric = getattr(report, "metric", None)
        periodic = getattr(report, "pruning", False) or cfg.train.eval_every > 0
        wanted = metric and getattr(report, "active", False) and periodic
        hook = periodic_evaluator(cfg, [str(metric).split("/")[0]], report) if wanted else None
        train(cfg, run_dir=run_dir, evaluate=hook)
    if distributed_rank() != 0:
        return {}
    return flatten_results(evaluate_checkpoint(run_dir, cfg.eval.suite))
