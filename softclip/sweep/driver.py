"""The sweep driver: an ask/tell loop keeping ``workers`` trials in flight through a launcher.

A new trial starts as soon as one finishes (no batch waits for its slowest). Progress is counted from the
storage: the sweep ends when COMPLETE + PRUNED trials reach ``n_trials``; a stale RUNNING trial (its worker
lost: killed sweep, node failure) is failed and re-enqueued with the same parameters, and the retry resumes from
the same run folder. So a killed sweep that is restarted ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from softclip.atomic import write_text
from softclip.config import ConfigError
from softclip.errors import SoftclipError
from softclip.launch import JobFailed, Launcher, load_cluster, make_launcher, uses_cluster
from softclip.sweep.space import grid_size, suggest
from softclip.sweep.spec import SweepSpec, base_data, build_run_config
from softclip.sweep.study import (
    Heartbeat,
    fail_stale_trials,
    make_pruner,
    make_sampler,
    quiet_optuna,
    redact_url,
    resolve_storage_url,
    run_key,
    storage_for,
)
from softclip.sweep.trial import ERROR_ATTR, TrialTask, run_trial

log = logging.getLogger("softclip.sweep")
JOB_ATTR = "softclip:job_id"


class SweepError(SoftclipError, RuntimeError):
    """The sweep cannot go on (too many failed trials)."""


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns."""

    study_name: str
    storage_url: str
    sweep_dir: Path
    counts: dict[str, int]
    best: list[dict[str, Any]] = field(default_factory=list)


def sweep_dir(spec: SweepSpec) -> Path:
    """``<output_dir>/<profile>/<name>`` (``<output_dir>/<name>`` without a profile): one study per profile."""
    parts = [spec.profile] if spec.profile else []
    return Path(spec.output_dir, *parts, spec.name)


def target_trials(spec: SweepSpec, n_trials: int | None = None) -> int:
    if n_trials is not None:
        if n_trials < 1:
            raise ConfigError(f"--n-trials={n_trials}: the number of trials to reach must be >= 1")
        return n_trials
    if spec.n_trials is not None:
        return spec.n_trials
    if spec.sampler.name == "grid":
        return grid_size(spec.space)
    raise ConfigError(f"{spec.source}: n_trials is not set (in the file or with --n-trials)")


def open_study(spec: SweepSpec, storage_url: str | None = None, create: bool = True) -> optuna.Study:
    """Create (or load) the study with the spec's sampler, pruner, directions and heartbeat storage."""
    url = storage_url or resolve_storage_url(spec.storage, sweep_dir(spec))
    storage = storage_for(spec, url)
    name = spec.study_name or spec.name
    if not create:
        return optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec))
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec.pruner.name, spec.pruner.options, spec.source),
        directions=spec.directions,
        load_if_exists=True,
    )
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in spec.directions]:
        raise ConfigError(f"{spec.source}: study {name!r} in {redact_url(url)} exists with other objective directions")
    existing = len(study.get_trials(deepcopy=False))
    if existing:
        study.sampler = make_sampler(spec, offset=existing)
    with quiet_optuna():
        study.set_metric_names([o.metric for o in spec.objective])
    return study


def count_states(study: optuna.Study) -> Counter[str]:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


class SweepDriver:
    """Holds the study, the launcher and the jobs in flight for one :func:`run_sweep` call."""

    def __init__(self, spec: SweepSpec, launcher: Launcher, target: int, storage_url: str) -> None:
        self.spec, self.launcher, self.target, self.url = spec, launcher, target, storage_url
        self.study = open_study(spec, storage_url)
        self.storage = self.study._storage
        self.base = base_data(spec)
        self.in_flight: dict[int, tuple[int, Any]] = {}  # trial number -> (trial id, job)
        self.heartbeat = Heartbeat(self.storage, spec.heartbeat_interval)
        self.max_failures = spec.max_failures or max(target, 3)
        self._last_stale_check = 0.0

    def task_for(self, trial: optuna.Trial, params: dict[str, Any]) -> TrialTask:
        frozen = self.storage.get_trial(trial._trial_id)
        key = run_key(frozen)
        root = sweep_dir(self.spec).resolve() / "trials"
        configs, run_dirs = [], []
        for seed in self.spec.seeds:
            name = f"{self.spec.name}-t{key:04d}-s{seed}"
            cfg = build_run_config(self.base, params, self.spec.source, seed=seed, name=name,
                                   output_dir=str(root), profile=self.spec.profile)  # fmt: skip
            configs.append(cfg.to_dict())
            run_dirs.append(str(root / name))
        trial.set_user_attr("run_dirs", run_dirs)
        return TrialTask(
            storage_url=self.url, study_name=self.study.study_name, trial_id=trial._trial_id, number=trial.number,
            run_key=key, params=params, configs=configs, run_dirs=run_dirs,
            objectives=[o.metric for o in self.spec.objective], prune_metric=self.spec.prune_metric,
            pruner=self.spec.pruner.name, pruner_options=dict(self.spec.pruner.options), trial_fn=self.spec.trial,
            heartbeat_interval=self.spec.heartbeat_interval, grace_period=self.spec.effective_grace,
            max_retry=self.spec.max_retry,
        )  # fmt: skip

    def _ask(self) -> TrialTask | None:
        with quiet_optuna():
            trial = self.study.ask()
        self.heartbeat.add(trial._trial_id)
        try:
            return self.task_for(trial, suggest(trial, self.spec.space))
        except Exception as err:  # noqa: BLE001 - a bad sample is a failed trial, not a dead sweep
            trial.set_user_attr(ERROR_ATTR, f"{type(err).__name__}: {err}"[:2000])
            self.heartbeat.discard(trial._trial_id)
            self.study.tell(trial, state=TrialState.FAIL)
            return None

    def slots(self, counts: Counter[str]) -> int:
        """Trials to start now: free launcher slots, bounded so that finished + active never pass the target."""
        free = self.launcher.max_parallel - len(self.in_flight)
        if self.launcher.queues_itself:
            free = min(free, self.launcher.max_parallel)
        done = counts["COMPLETE"] + counts["PRUNED"]
        fresh = max(0, self.target - done - counts["RUNNING"] - counts["WAITING"])
        return max(0, min(free, counts["WAITING"] + fresh))

    def fill(self, counts: Counter[str]) -> None:
        tasks = [t for t in (self._ask() for _ in range(self.slots(counts))) if t is not None]
        if not tasks:
            return
        jobs = self.launcher.submit_many(run_trial, [(t,) for t in tasks])
        for task, job in zip(tasks, jobs, strict=True):
            try:
                self.storage.set_trial_system_attr(task.trial_id, JOB_ATTR, job.job_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # an in-process job has already finished
            self.in_flight[task.number] = (task.trial_id, job)
            log.info("trial %d started (job %s): %s", task.number, job.job_id, json.dumps(task.params))

    def collect(self, timeout: float) -> None:
        jobs = {id(job): number for number, (_, job) in self.in_flight.items()}
        for job in self.launcher.wait([job for _, job in self.in_flight.values()], timeout):
            number = jobs[id(job)]
            trial_id, _ = self.in_flight.pop(number)
            self.heartbeat.discard(trial_id)
            try:
                outcome = job.result()
                log.info("trial %d %s %s", number, outcome.get("state"), outcome.get("values", outcome.get("error", "")))
            except JobFailed as err:
                self._lost(trial_id, number, str(err))

    def _lost(self, trial_id: int, number: int, error: str) -> None:
        """The job died without telling the study (killed, out of memory): fail it and retry its params."""
        frozen = self.storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING:
            return
        log.warning("trial %d lost its job: %s", number, error.splitlines()[0] if error else "")
        self.storage.set_trial_user_attr(trial_id, ERROR_ATTR, f"job lost: {error}"[:2000])
        if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            callback = getattr(self.storage, "get_heartbeat_stale_trial_callback", lambda: None)()
            if callback is None:
                from optuna.storages import RetryHeartbeatStaleTrialCallback

                with quiet_optuna():
                    callback = RetryHeartbeatStaleTrialCallback(max_retry=self.spec.max_retry)
            callback(self.study, self.storage.get_trial(trial_id))

    def check_stale(self) -> None:
        now = time.monotonic()
        if now - self._last_stale_check < max(1.0, self.spec.heartbeat_interval / 2):
            return
        self._last_stale_check = now
        for number in fail_stale_trials(self.study, self.spec.effective_grace, self.spec.max_retry):
            log.warning("trial %d was stale (no heartbeat for %ds): failed and re-enqueued", number,
                        self.spec.effective_grace)  # fmt: skip

    def failures(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if ERROR_ATTR in t.user_attrs and not t.user_attrs[ERROR_ATTR].startswith("job lost"))  # fmt: skip

    def run(self, poll: float) -> Counter[str]:
        with self.heartbeat:
            while True:
                self.check_stale()
                counts = count_states(self.study)
                if counts["COMPLETE"] + counts["PRUNED"] >= self.target and not self.in_flight:
                    return counts
                if self.failures() >= self.max_failures:
                    raise SweepError(f"{self.failures()} trials failed (max_failures={self.max_failures}); "
                                     f"see `softclip sweep {self.spec.source} --status`")  # fmt: skip
                self.fill(counts)
                if self.in_flight:
                    self.collect(poll)
                else:
                    time.sleep(poll)  # waiting on trials run by others (e.g. a previous driver's jobs)


def make_sweep_launcher(spec: SweepSpec, name: str | None, workers: int | None, cfg_launcher: Any) -> Launcher:
    """The launcher from CLI flags > the sweep file's ``launcher`` > the base config's ``launcher``."""
    pick = lambda *values: next((v for v in values if v is not None), None)  # noqa: E731
    ls = spec.launcher
    chosen = pick(name, ls.name, cfg_launcher.name)
    cluster_path = pick(ls.cluster, cfg_launcher.cluster)
    cluster = load_cluster(cluster_path) if uses_cluster(chosen) else None
    if cluster is not None and cluster.nodes * cluster.tasks_per_node > 1 and spec.pruner.name != "none":
        # a pruned rank 0 would leave the other ranks waiting at the trainer's evaluation barrier
        raise ConfigError(f"{spec.source}: pruner.name={spec.pruner.name!r} needs single-task jobs; the cluster "
                          f"runs {cluster.nodes}x{cluster.tasks_per_node} tasks per job (use pruner.name: none)")
    folder = Path(cluster.folder) / spec.name if cluster is not None else sweep_dir(spec) / "jobs"
    return make_launcher(
        chosen,
        workers=pick(workers, ls.workers, cfg_launcher.workers),
        cpus_per_job=pick(ls.cpus_per_job, cfg_launcher.cpus_per_job),
        cpu_budget=pick(ls.cpu_budget, getattr(cfg_launcher, "cpu_budget", None)),
        cluster=cluster,
        folder=folder,
        job_name=spec.name,
    )


def run_sweep(
    spec: SweepSpec,
    launcher: str | None = None,
    n_trials: int | None = None,
    workers: int | None = None,
    poll: float = 1.0,
) -> SweepResult:
    """Run (or resume) the sweep until ``n_trials`` trials are COMPLETE or PRUNED.

    Args:
        spec: the loaded sweep (:func:`softclip.sweep.load_sweep`).
        launcher: launcher name (default: the sweep file's, else the base config's ``launcher.name``).
        n_trials: overrides the file's ``n_trials``.
        workers: trials in flight at once (default: the file's, else the base config's ``launcher.workers``).
        poll: seconds between state checks.
    """
    target = target_trials(spec, n_trials)
    folder = sweep_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(spec.storage, folder)
    copy = spec.model_dump(mode="json")
    if copy.get("storage"):  # the copy beside the results never holds the database password
        copy["storage"] = redact_url(copy["storage"])
    write_text(folder / "sweep.yaml", yaml.safe_dump(copy, sort_keys=False))
    cfg = build_run_config(base_data(spec), {}, spec.source)
    if spec.trial == "train":  # generate the data once here, not racing in the trials
        from softclip.train.run import ensure_synth_data

        ensure_synth_data(cfg.data)
    with make_sweep_launcher(spec, launcher, workers, cfg.launcher) as chosen:
        driver = SweepDriver(spec, chosen, target, url)
        log.info("sweep %s: %d trials, launcher %s x%d, storage %s", spec.name, target, chosen.name,
                 chosen.max_parallel, redact_url(url))  # fmt: skip
        counts = driver.run(poll)
    return SweepResult(driver.study.study_name, url, folder, dict(counts), best_trials(driver.study))


def best_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """The best trial (single objective) or the Pareto front, as plain dicts."""
    try:
        best = study.best_trials
    except ValueError:
        return []
    return [{"number": t.number, "values": t.values, "params": t.params} for t in best]
