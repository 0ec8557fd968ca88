"""Trial functions and what a worker needs around them: the reporter, the objective values, flat results.

Trial functions live in :data:`TRIALS` (``train``: the real train + eval; ``noop``: the plumbing only) or are
named ``module:function``. Signature: ``fn(cfg: Config, run_dir: Path, report: Report) -> {metric: value}``;
``report(step, metrics)`` feeds the pruner. The loop that runs them is :mod:`softclip.sweep.worker`.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from softclip import runfiles
from softclip.config import Config
from softclip.launch import distributed_rank
from softclip.registry import Registry

log = logging.getLogger("softclip.sweep")

Report = Callable[[int, dict[str, float]], None]
TrialFn = Callable[[Config, Path, Report], dict[str, float]]
TRIALS: Registry[TrialFn] = Registry("sweep.trial")
ERROR_ATTR = "error"
TRACEBACK_ATTR = "traceback"


class TrialAbandoned(RuntimeError):
    """The trial was declared stale (and re-enqueued) while this worker ran it: stop, the retry takes over."""


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


class Reporter:
    """``report(step, metrics)`` for the first seed: intermediate value, prune check, stale check."""

    def __init__(self, trial: optuna.Trial, metric: str, active: bool, pruning: bool) -> None:
        self.trial, self.metric = trial, metric
        self.active = active  # intermediate values are recorded for the first seed only
        self.pruning = pruning
        self.reported = 0

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        if not self.active or self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return
        try:
            self.trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TrialAbandoned(f"trial {self.trial.number} was failed as stale; its retry takes over") from None
        self.reported += 1
        if self.pruning and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.metric}={value:.4g})")


class SilentReporter:
    """Non-zero ranks: same attributes as the real reporter (so every rank builds the same evaluation hook and
    meets the trainer's barriers), reports nothing."""

    def __init__(self, metric: str, pruning: bool) -> None:
        self.metric, self.active, self.pruning = metric, True, pruning

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        return None


def failures(study: optuna.Study) -> int:
    """Trials of the study that failed with an error (not the stale ones a lost worker left)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if ERROR_ATTR in t.user_attrs)


def objective_values(per_seed: list[dict[str, float]], objectives: list[str]) -> list[float]:
    values = []
    for metric in objectives:
        missing = [i for i, m in enumerate(per_seed) if metric not in m]
        if missing:
            known = ", ".join(sorted(per_seed[missing[0]])) or "none"
            raise KeyError(f"objective metric {metric!r} not in the trial's results (got: {known})")
        values.append(sum(m[metric] for m in per_seed) / len(per_seed))
    return values


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
    from softclip.evaluation.suite import preflight
    from softclip.train import train
    from softclip.train.rundir import check_owner

    check_owner(run_dir, cfg)  # a folder holding no run, or another config's run, fails here, never re-evaluated as this
    if not (run_dir / runfiles.DONE).is_file():
        metric = getattr(report, "metric", None)
        periodic = getattr(report, "pruning", False) or cfg.train.eval_every > 0
        wanted = metric and getattr(report, "active", False) and periodic
        hook = periodic_evaluator(cfg, [str(metric).split("/")[0]], report) if wanted else None
        train(cfg, run_dir=run_dir, evaluate=hook, preflight=lambda: preflight(cfg.eval.suite, cfg.data.root))
    if distributed_rank() != 0:
        return {}
    return flatten_results(evaluate_checkpoint(run_dir, cfg.eval.suite))
