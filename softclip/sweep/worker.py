"""An Optuna worker: ``study.optimize`` on the shared study storage until the sweep has its trials.

A sweep on any launcher is ``workers`` copies of :func:`run_worker` (one job array, or this process). Each loads
the study and runs Optuna's own loop: ask (a retried WAITING trial first), run the trial function once per
training seed with intermediate values for the pruner, tell. Stopping is Optuna's
:class:`~optuna.study.MaxTrialsCallback` counting COMPLETE, PRUNED and RUNNING trials, so a worker does not start
a trial that running ones already cover. Heartbeats and the retry of a lost worker's trial are Optuna's (RDB
storages; the journal gets :class:`~softclip.sweep.study.JournalHeartbeat`); a retried trial reuses its
original's run folder (:func:`run_key`) and resumes from its checkpoint. A requeued job (same job id) first
fails and re-enqueues the trials it was running, which it then resumes the same way.

In a multi-task (DDP) job rank 0 is the worker; the other ranks :func:`follow` the trials it starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from softclip.config import Config, base_data, build_run_config
from softclip.launch import distributed_rank
from softclip.sweep.space import suggest
from softclip.sweep.spec import SweepSpec, sweep_dir
from softclip.sweep.study import JournalHeartbeat, is_journal, open_study, quiet_optuna, run_key
from softclip.sweep.trial import (
    ERROR_ATTR,
    TRACEBACK_ATTR,
    Reporter,
    SilentReporter,
    TrialAbandoned,
    failures,
    objective_values,
    resolve_trial_fn,
)

log = logging.getLogger("softclip.sweep")
JOB_ATTR = "softclip:job_id"
SURPLUS_ATTR = "softclip:surplus"
LEFT_ATTR = "softclip:left:"  # + job id: study attribute set when a multi-task job's rank 0 stops
#: the states that count towards the target when a worker decides whether to start another trial
COVERING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


@dataclass(frozen=True)
class WorkerTask:
    """What a worker needs, as plain data (pickled into the job array).

    Args:
        spec: the sweep, ``SweepSpec.model_dump(mode="json")``.
        storage_url: the study storage (absolute).
        target: COMPLETE + PRUNED trials the sweep stops at.
        index: the worker's number in its array (decorrelates the samplers' seeds).
        max_failures: the worker stops once this many trials of the study have failed with an error.
    """

    spec: dict[str, Any]
    storage_url: str
    target: int
    index: int = 0
    max_failures: int = 3


def worker_id() -> str:
    """This worker's id: its submitit job id (``<array>_<index>`` on SLURM, kept through a requeue), else
    ``host-pid``."""
    with contextlib.suppress(RuntimeError):  # not inside a submitit job
        import submitit

        return str(submitit.JobEnvironment().job_id)
    return f"{socket.gethostname()}-{os.getpid()}"


def trial_runs(spec: SweepSpec, base: dict[str, Any], params: dict[str, Any], key: int) -> tuple[list[Config], list[str]]:
    """The run config and run folder of each training seed of the trial whose folders are keyed ``key``."""
    root = sweep_dir(spec).resolve() / "trials"
    configs, run_dirs = [], []
    for seed in spec.seeds:
        name = f"{spec.name}-t{key:04d}-s{seed}"
        configs.append(build_run_config(base, params, spec.source, seed=seed, name=name, output_dir=str(root),
                                        profile=spec.profile))  # fmt: skip
        run_dirs.append(str(root / name))
    return configs, run_dirs


def frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


class Worker:
    """One worker's study connection and loop (see the module docstring)."""

    def __init__(self, task: WorkerTask) -> None:
        self.task = task
        self.spec = SweepSpec.model_validate(task.spec)
        self.id = worker_id()
        self.fn = resolve_trial_fn(self.spec.trial)
        self.base = base_data(self.spec)
        self.study = open_study(self.spec, task.storage_url, create=False, worker_index=task.index)
        self.ran = 0

    def count(self, below: int | None = None) -> int:
        """Trials that cover the target: finished ones, and running ones (numbered below ``below``)."""
        trials = self.study.get_trials(deepcopy=False, states=COVERING)
        return sum(1 for t in trials if below is None or t.state.is_finished() or t.number < below)

    def requeued(self) -> None:
        """Fail and re-enqueue the trials this job id was running before a requeue (optuna has no public way
        to continue a RUNNING trial; the retry resumes the same run folders)."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with quiet_optuna():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=self.spec.max_retry)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(JOB_ATTR) == self.id:
                log.info("worker %s was requeued: trial %d is retried and resumes its run folder", self.id, t.number)
                self.study.tell(t.number, state=TrialState.FAIL)
                retry(self.study, frozen(self.study, t.number))

    def run(self) -> dict[str, Any]:
        """Optimize until finished and running trials cover the target; returns a summary."""
        if distributed_rank() != 0:
            return self.follow()
        self.requeued()
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
            configs, run_dirs = trial_runs(self.spec, self.base, params, run_key(frozen(self.study, trial.number)))
        except Exception as err:
            trial.set_user_attr(ERROR_ATTR, f"{type(err).__name__}: {err}"[:2000])
            raise
        trial.set_user_attr("run_dirs", run_dirs)
        trial.set_user_attr(JOB_ATTR, self.id)  # last: followers start on it
        beat = is_journal(self.task.storage_url)
        with JournalHeartbeat(trial, self.spec.heartbeat_interval) if beat else contextlib.nullcontext():
            return self.execute(trial, configs, run_dirs)

    def execute(self, trial: optuna.Trial, configs: list[Config], run_dirs: list[str]) -> float | list[float]:
        self.ran += 1
        pruning = self.spec.pruner.name != "none"
        try:
            per_seed = []
            for i, (cfg, run_dir) in enumerate(zip(configs, run_dirs, strict=True)):
                reporter = Reporter(trial, self.spec.prune_metric, active=i == 0, pruning=pruning)
                per_seed.append(self.fn(cfg, Path(run_dir), reporter))
            values = objective_values(per_seed, [o.metric for o in self.spec.objective])
            trial.set_user_attr("metrics", {k: v for k, v in per_seed[0].items() if isinstance(v, float)})
        except (optuna.TrialPruned, TrialAbandoned):
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            log.error("trial %d failed: %s", trial.number, message)
            with contextlib.suppress(Exception):  # the trial may have been failed as stale meanwhile
                trial.set_user_attr(ERROR_ATTR, message[:2000])
                trial.set_user_attr(TRACEBACK_ATTR, traceback.format_exc()[-4000:])
            raise
        return values if len(values) > 1 else values[0]

    def follow(self, poll: float = 1.0) -> dict[str, Any]:
        """Ranks > 0 of a multi-task job: train every trial rank 0 of this job starts, until it stops."""
        seen: set[int] = set()
        pruning = self.spec.pruner.name != "none"
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
                self.fn(cfg, Path(run_dir), SilentReporter(self.spec.prune_metric, pruning))
        return {"worker": self.id, "trials": len(seen), "rank": distributed_rank()}


def run_worker(task: WorkerTask) -> dict[str, Any]:
    """Body of one sweep worker task (module-level, so launchers can pickle it)."""
    return Worker(task).run()
