"""An Optuna worker: ``study.optimize`` on the shared study storage until the sweep has its trials.

A sweep on any launcher is ``workers`` copies of :func:`run_worker` (one SLURM job array, local processes, or
this process). Each loads the study from its storage (SQLite, PostgreSQL or a journal file) and runs Optuna's
own loop: ask (a retried WAITING trial first), run the trial function once per training seed with intermediate
values for the pruner, tell. Stopping is Optuna's :class:`~optuna.study.MaxTrialsCallback`, counting COMPLETE,
PRUNED and RUNNING trials, so a worker does not start a trial that running ones already cover. Two workers
asking at the same moment could still both start one: a trial that finds the target covered by finished trials
and by running trials with smaller numbers fails at once as surplus (user attribute ``softclip:surplus``), so a
sweep ends with exactly ``n_trials`` finished trials.

Heartbeats are Optuna's for RDB storages (with ``RetryFailedTrialCallback`` re-enqueueing a lost worker's trial
under the same parameters); the journal storage keeps the same bookkeeping in a system attribute
(:mod:`softclip.sweep.study`). A retried trial reuses its original's run folder (:func:`run_key`) and resumes
from its checkpoint. A requeued SLURM job keeps its job id and first finishes the trials it was running. In a
multi-task (DDP) job rank 0 is the worker; the other ranks :meth:`Worker.follow` the trials it starts.
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
from optuna.trial import TrialState

from softclip.config import Config, base_data, build_run_config
from softclip.launch import distributed_rank
from softclip.sweep.space import suggest
from softclip.sweep.spec import SweepSpec, sweep_dir
from softclip.sweep.study import (
    Heartbeat,
    open_study,
    quiet_optuna,
    run_key,
    unwrap_storage,
)
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
LEFT_ATTR = "softclip:left:"  # + worker id: study attribute set when a multi-task job's rank 0 stops
#: the states that count towards the target when a worker decides whether to start another trial
COVERING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class WorkerTask:
    """What a worker needs, as plain data (pickled to SLURM jobs, sent to local processes).

    Args:
        spec: the sweep, ``SweepSpec.model_dump(mode="json")``.
        storage_url: the study storage (absolute; the driver resolved it).
        target: COMPLETE + PRUNED trials the sweep stops at.
        index: the worker's number among those the driver started (decorrelates the samplers' seeds).
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


class Worker:
    """One worker's study connection and loop (see the module docstring)."""

    def __init__(self, task: WorkerTask) -> None:
        self.task = task
        self.spec = SweepSpec.model_validate(task.spec)
        self.id = worker_id()
        self.fn = resolve_trial_fn(self.spec.trial)
        self.base = base_data(self.spec)
        self.study = open_study(self.spec, task.storage_url, create=False, worker_index=task.index)
        self.storage = self.study._storage
        self.journal = isinstance(unwrap_storage(self.storage), optuna.storages.JournalStorage)
        self.ran = 0
        self._abandoned = False

    # ------------------------------------------------------------------------------------------- counting

    def _count(self, states: tuple[TrialState, ...], below: int | None = None) -> int:
        trials = self.study.get_trials(deepcopy=False, states=states)
        return sum(1 for t in trials if below is None or t.state.is_finished() or t.number < below)

    def _stop_on_failures(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if failures(self.study) >= self.task.max_failures:
            study.stop()

    # ------------------------------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Finish this job's own RUNNING trials (a requeue), then optimize until covered; returns a summary."""
        if distributed_rank() != 0:
            return self.follow()
        for frozen in self._own_running():
            log.info("worker %s resumes trial %d", self.id, frozen.number)
            self._resume(frozen)
        callbacks = [optuna.study.MaxTrialsCallback(self.task.target, states=COVERING), self._stop_on_failures]
        while self._count(COVERING) < self.task.target and failures(self.study) < self.task.max_failures:
            self._abandoned = False
            try:
                with quiet_optuna():
                    self.study.optimize(self.objective, callbacks=callbacks, catch=(Exception,), gc_after_trial=True)
            except ValueError:  # optuna could not tell a trial the study had failed as stale meanwhile
                if not self._abandoned:
                    raise
                continue
            break
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # release the other ranks of this job
            self.storage.set_study_system_attr(self.study._study_id, LEFT_ATTR + self.id, True)
        return {"worker": self.id, "trials": self.ran}

    def objective(self, trial: optuna.Trial) -> float | list[float]:
        """Optuna's objective: surplus check, parameters, run folders, then the trial function per seed."""
        ahead = self._count(COVERING, below=trial.number)
        if ahead >= self.task.target:
            trial.set_user_attr(SURPLUS_ATTR, f"{ahead} finished or earlier running trials cover the target")
            self.study.stop()
            raise TrialAbandoned(f"trial {trial.number} is surplus: the target of {self.task.target} is covered")
        try:  # a sample the run config rejects is a failed trial with its error, like a failed run
            params = suggest(trial, self.spec.space)
            configs, run_dirs = trial_runs(self.spec, self.base, params, run_key(self.storage.get_trial(trial._trial_id)))
        except Exception as err:
            trial.set_user_attr(ERROR_ATTR, f"{type(err).__name__}: {err}"[:2000])
            raise
        trial.set_user_attr("run_dirs", run_dirs)
        self.storage.set_trial_system_attr(trial._trial_id, JOB_ATTR, self.id)  # last: followers start on it
        with self._beating(trial._trial_id, needed=self.journal):
            return self._execute(trial, configs, run_dirs)

    def _execute(self, trial: optuna.Trial, configs: list[Config], run_dirs: list[str]) -> float | list[float]:
        self.ran += 1
        pruning = self.spec.pruner.name != "none"
        try:
            per_seed = []
            for i, (cfg, run_dir) in enumerate(zip(configs, run_dirs, strict=True)):
                reporter = Reporter(self.study, trial, self.spec.prune_metric, active=i == 0, pruning=pruning)
                per_seed.append(self.fn(cfg, Path(run_dir), reporter))
            values = objective_values(per_seed, [o.metric for o in self.spec.objective])
            trial.set_user_attr("metrics", {k: v for k, v in per_seed[0].items() if isinstance(v, float)})
        except optuna.TrialPruned:
            raise
        except (TrialAbandoned, optuna.exceptions.UpdateFinishedTrialError):
            self._abandoned = True
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {err}"
            log.error("trial %d failed: %s", trial.number, message)
            try:
                trial.set_user_attr(ERROR_ATTR, message[:2000])
                trial.set_user_attr(TRACEBACK_ATTR, traceback.format_exc()[-4000:])
            except optuna.exceptions.UpdateFinishedTrialError:
                self._abandoned = True
            raise
        return values if len(values) > 1 else values[0]

    def _own_running(self) -> list[optuna.trial.FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [t for t in trials if t.system_attrs.get(JOB_ATTR) == self.id]

    def _resume(self, frozen: optuna.trial.FrozenTrial) -> None:
        """Run a trial this job had started before it was requeued, and tell its outcome."""
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        configs, run_dirs = trial_runs(self.spec, self.base, frozen.params, run_key(frozen))
        with self._beating(frozen._trial_id, needed=True), quiet_optuna():
            try:
                self.study.tell(trial, self._execute(trial, configs, run_dirs))
            except optuna.TrialPruned:
                self.study.tell(trial, state=TrialState.PRUNED)
            except (TrialAbandoned, optuna.exceptions.UpdateFinishedTrialError):
                pass
            except Exception:  # noqa: BLE001 - recorded on the trial by _execute
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError):
                    self.study.tell(trial, state=TrialState.FAIL)

    def _beating(self, trial_id: int, needed: bool) -> contextlib.AbstractContextManager[Any]:
        """Our heartbeat thread where Optuna keeps none (journal storage, a resumed trial)."""
        return Heartbeat(self.storage, self.spec.heartbeat_interval, [trial_id]) if needed else contextlib.nullcontext()

    # ---------------------------------------------------------------------------------- other DDP ranks

    def follow(self, poll: float = 1.0) -> dict[str, Any]:
        """Ranks > 0 of a multi-task job: train every trial rank 0 of this job starts, until it stops."""
        seen: set[int] = set()
        pruning = self.spec.pruner.name != "none"
        while True:
            mine = [t for t in self._own_running() if t._trial_id not in seen]
            if not mine:
                if LEFT_ATTR + self.id in self.storage.get_study_system_attrs(self.study._study_id):
                    break
                time.sleep(poll)
                continue
            frozen = mine[0]
            seen.add(frozen._trial_id)
            configs, run_dirs = trial_runs(self.spec, self.base, frozen.params, run_key(frozen))
            for cfg, run_dir in zip(configs, run_dirs, strict=True):
                self.fn(cfg, Path(run_dir), SilentReporter(self.spec.prune_metric, pruning))
        return {"worker": self.id, "trials": len(seen), "rank": distributed_rank()}


def run_worker(task: WorkerTask) -> dict[str, Any]:
    """Body of one sweep worker job (module-level, so launchers can pickle it)."""
    return Worker(task).run()
