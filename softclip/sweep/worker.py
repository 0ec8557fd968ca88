"""An Optuna worker: ``study.optimize`` on the shared study storage until the sweep has its trials.

A sweep is ``workers`` copies of :func:`run_worker` (one job array, or this process), each running Optuna's own
loop: ask (a retried WAITING trial first), run the trial function once per training seed, tell; Optuna's
``MaxTrialsCallback`` counting COMPLETE, PRUNED and RUNNING trials stops it. A retried trial (a lost worker's,
or a requeued job's own) reuses its original's run folder (:func:`run_key`) and resumes from its checkpoint.
In a multi-task (DDP) job rank 0 is the worker; the other ranks :meth:`Worker.follow` the trials it starts.

Trial functions live in :data:`TRIALS` (``train``: the real train + eval; ``noop``: the plumbing only) or are
named ``module:function``: ``fn(cfg: Config, run_dir: Path, report: Reporter) -> {"benchmark/metric": value}``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from softclip import runfiles
from softclip.config import Config, base_data, build_run_config
from softclip.launch import distributed_rank
from softclip.registry import Registry
from softclip.sweep.space import suggest
from softclip.sweep.study import JOURNAL_PREFIX, journal_heartbeat, open_study, quiet_optuna, retry, run_key
from softclip.sweep_spec import SweepSpec, sweep_dir

log = logging.getLogger("softclip.sweep")
TrialFn = Callable[[Config, Path, "Reporter"], dict[str, float]]
TRIALS: Registry[TrialFn] = Registry("sweep.trial")
ERROR_ATTR = "error"
JOB_ATTR = "softclip:job_id"
SURPLUS_ATTR = "softclip:surplus"
LEFT_ATTR = "softclip:left:"  # + job id: study attribute set when a multi-task job's rank 0 stops
#: the states that count towards the target when a worker decides whether to start another trial
COVERING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class TrialAbandoned(RuntimeError):
    """The trial was declared stale (and re-enqueued) while this worker ran it, or is surplus: stop."""


@dataclass(frozen=True)
class WorkerTask:
    """What a worker needs, as plain data pickled into the job array: the sweep (``SweepSpec.model_dump(mode=
    "json")``), the absolute storage URL, the COMPLETE + PRUNED target, the worker's number in its array (it
    decorrelates the samplers' seeds) and the failed trials of the study at which the worker stops."""

    spec: dict[str, Any]
    storage_url: str
    target: int
    index: int = 0
    max_failures: int = 3


class Reporter:
    """``report(step, metrics)``: the first seed's intermediate value for the pruner, then the prune check.
    ``trial=None`` (ranks > 0 of a multi-task job) reports nothing but has the same attributes, so every rank
    builds the same evaluation hook and meets the trainer's barriers."""

    def __init__(self, trial: optuna.Trial | None, metric: str, active: bool, pruning: bool) -> None:
        self.trial, self.metric, self.active, self.pruning = trial, metric, active, pruning

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        value = float(metrics.get(self.metric, math.nan))
        if self.trial is None or not self.active or not math.isfinite(value):
            return
        try:
            self.trial.report(value, step)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TrialAbandoned(f"trial {self.trial.number} was failed as stale; its retry takes over") from None
        if self.pruning and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({self.metric}={value:.4g})")


def failures(study: optuna.Study) -> int:
    """Trials of the study that failed with an error (not the stale ones a lost worker left)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if ERROR_ATTR in t.user_attrs)


def resolve_trial_fn(name: str) -> TrialFn:
    """A registered trial function, or ``package.module:function`` (imported)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    return TRIALS.get(name)


def worker_id() -> str:
    """Its submitit job id (``<array>_<index>`` on SLURM, kept through a requeue), else ``host-pid``."""
    with contextlib.suppress(RuntimeError):  # not inside a submitit job
        import submitit

        return str(submitit.JobEnvironment().job_id)
    return f"{socket.gethostname()}-{os.getpid()}"


def trial_runs(spec: SweepSpec, base: dict[str, Any], params: dict[str, Any], key: int) -> tuple[list[Config], list[str]]:
    """The run config and run folder of each training seed of the trial whose folders are keyed ``key``."""
    root = sweep_dir(spec).resolve() / "trials"
    names = [f"{spec.name}-t{key:04d}-s{seed}" for seed in spec.seeds]
    configs = [build_run_config(base, params, spec.source, seed=seed, name=name, output_dir=str(root),
                                profile=spec.profile) for seed, name in zip(spec.seeds, names, strict=True)]  # fmt: skip
    return configs, [str(root / name) for name in names]


class Worker:
    """One worker's study connection and loop (see the module docstring)."""

    def __init__(self, task: WorkerTask) -> None:
        self.task, self.spec = task, SweepSpec.model_validate(task.spec)
        self.id, self.base = worker_id(), base_data(self.spec)
        self.fn = resolve_trial_fn(self.spec.trial)
        self.study = open_study(self.spec, task.storage_url, create=False, worker_index=task.index)
        self.ran = 0

    def count(self, below: int | None = None) -> int:
        """Trials that cover the target: finished ones, and running ones (numbered below ``below``)."""
        trials = self.study.get_trials(deepcopy=False, states=COVERING)
        return sum(1 for t in trials if below is None or t.state.is_finished() or t.number < below)

    def run(self) -> dict[str, Any]:
        """Optimize until finished and running trials cover the target; returns a summary."""
        if distributed_rank() != 0:
            return self.follow()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(JOB_ATTR) == self.id:  # this job was requeued while it ran the trial
                log.info("worker %s was requeued: trial %d is retried and resumes its run folder", self.id, t.number)
                retry(self.study, t.number, self.spec.max_retry)
        stop_on_failures = lambda study, _: study.stop() if failures(study) >= self.task.max_failures else None  # noqa: E731
        callbacks = [optuna.study.MaxTrialsCallback(self.task.target, states=COVERING), stop_on_failures]
        if self.count() < self.task.target and failures(self.study) < self.task.max_failures:
            with quiet_optuna():
                self.study.optimize(self.objective, callbacks=callbacks, catch=(Exception,), gc_after_trial=True)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # release the other ranks of this job
            self.study.set_user_attr(LEFT_ATTR + self.id, True)
        return {"worker": self.id, "trials": self.ran}

    def objective(self, trial: optuna.Trial) -> float | list[float]:
        """Optuna's objective: surplus check, parameters, run folders, then the trial function per seed."""
        # MaxTrialsCallback runs after a trial: two workers asking at once can both start one past the target
        ahead = self.count(below=trial.number)
        if ahead >= self.task.target:
            trial.set_user_attr(SURPLUS_ATTR, f"{ahead} finished or earlier running trials cover the target")
            self.study.stop()
            raise TrialAbandoned(f"trial {trial.number} is surplus: the target of {self.task.target} is covered")
        try:  # a sample the run config rejects is a failed trial with its error, like a failed run
            params = suggest(trial, self.spec.space)
            frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            configs, run_dirs = trial_runs(self.spec, self.base, params, run_key(frozen))
        except Exception as err:
            trial.set_user_attr(ERROR_ATTR, f"{type(err).__name__}: {err}"[:2000])
            raise
        trial.set_user_attr("run_dirs", run_dirs)
        trial.set_user_attr(JOB_ATTR, self.id)  # last: followers start on it
        beat = self.task.storage_url.startswith(JOURNAL_PREFIX)
        with journal_heartbeat(trial, self.spec.heartbeat_interval) if beat else contextlib.nullcontext():
            return self.execute(trial, configs, run_dirs)

    def execute(self, trial: optuna.Trial, configs: list[Config], run_dirs: list[str]) -> float | list[float]:
        """The trial function per seed; the objective values are the means over seeds."""
        self.ran += 1
        try:
            per_seed = [self.fn(cfg, Path(run_dir), Reporter(trial, self.spec.prune_metric, i == 0,
                                                             self.spec.pruner.name != "none"))
                        for i, (cfg, run_dir) in enumerate(zip(configs, run_dirs, strict=True))]  # fmt: skip
            values = []
            for o in self.spec.objective:
                missing = next((m for m in per_seed if o.metric not in m), None)
                if missing is not None:
                    known = ", ".join(sorted(missing)) or "none"
                    raise KeyError(f"objective metric {o.metric!r} not in the trial's results (got: {known})")
                values.append(sum(m[o.metric] for m in per_seed) / len(per_seed))
            trial.set_user_attr("metrics", {k: float(v) for k, v in per_seed[0].items() if isinstance(v, (int, float))})
        except (optuna.TrialPruned, TrialAbandoned):
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            log.error("trial %d failed: %s", trial.number, message)
            with contextlib.suppress(Exception):  # the trial may have been failed as stale meanwhile
                trial.set_user_attr(ERROR_ATTR, message[:2000])
                trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            raise
        return values if len(values) > 1 else values[0]

    def follow(self, poll: float = 1.0) -> dict[str, Any]:
        """Ranks > 0 of a multi-task job: train every trial rank 0 of this job starts, until it stops."""
        seen: set[int] = set()
        while True:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            mine = [t for t in running if t.user_attrs.get(JOB_ATTR) == self.id and t.number not in seen]
            if not mine:
                if LEFT_ATTR + self.id in self.study.user_attrs:
                    break
                time.sleep(poll)
                continue
            seen.add(mine[0].number)
            configs, run_dirs = trial_runs(self.spec, self.base, mine[0].params, run_key(mine[0]))
            for cfg, run_dir in zip(configs, run_dirs, strict=True):
                self.fn(cfg, Path(run_dir), Reporter(None, self.spec.prune_metric, True, self.spec.pruner.name != "none"))
        return {"worker": self.id, "trials": len(seen), "rank": distributed_rank()}


def run_worker(task: WorkerTask) -> dict[str, Any]:
    """Body of one sweep worker task (module-level, so launchers can pickle it)."""
    return Worker(task).run()


# -------------------------------------------------------------------------------------- trial functions


@TRIALS.register("noop")
def noop_trial(cfg: Config, run_dir: Path, report: Reporter) -> dict[str, float]:
    """No training: checks the plumbing (storage, launcher, heartbeats) and measures launch overhead.
    Reports and returns ``noop/value`` = β + τ + λ + µ of the trial's config, so samplers have a signal."""
    value = cfg.loss.beta + cfg.loss.tau + cfg.loss.soft_weight + cfg.loss.re_weight
    report(1, {"noop/value": value})
    return {"noop/value": value}


@TRIALS.register("train")
def train_trial(cfg: Config, run_dir: Path, report: Reporter) -> dict[str, float]:
    """Train (resuming from ``run_dir``), evaluating every ``train.eval_every`` steps for the pruner, then run
    the evaluation suite; returns the flat ``benchmark/metric`` results."""
    from softclip.evaluation import evaluate_checkpoint, flat_metrics
    from softclip.evaluation.hooks import periodic_evaluator
    from softclip.evaluation.suite import preflight
    from softclip.train import train
    from softclip.train.rundir import check_owner

    check_owner(run_dir, cfg)  # a folder holding no run, or another config's run, fails here, never re-evaluated as this
    if not (run_dir / runfiles.DONE).is_file():
        wanted = report.active and (report.pruning or cfg.train.eval_every > 0)
        hook = periodic_evaluator(cfg, [report.metric.split("/")[0]], report) if wanted else None
        train(cfg, run_dir=run_dir, evaluate=hook, preflight=lambda: preflight(cfg.eval.suite, cfg.data.root))
    if distributed_rank() != 0:
        return {}
    return flat_metrics(evaluate_checkpoint(run_dir, cfg.eval.suite))
