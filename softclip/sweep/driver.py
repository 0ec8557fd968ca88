"""The sweep driver: keeps ``workers`` Optuna workers (:mod:`softclip.sweep.worker`) on the study until it is done.

The driver creates the study, starts the workers through a launcher (one SLURM job array, local processes, or
in this process), and watches the storage: the sweep ends when COMPLETE + PRUNED trials reach ``n_trials``. A
worker that ends while trials are still to run (it was lost, or it stopped because running trials covered the
target) is replaced, up to ``workers`` at once and never more than the trials left. A stale RUNNING trial (no
heartbeat for ``grace_period``: killed sweep, lost node) is failed and re-enqueued with the same parameters by
Optuna's retry callback, and the retry resumes from the same run folder; meanwhile the driver keeps beating for
the trials of worker jobs that are still alive (a requeued SLURM job resumes its own trial). So a killed sweep
that is restarted ends with exactly ``n_trials`` finished trials.
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
from softclip.config import ConfigError, base_data, build_run_config, load_cluster
from softclip.errors import SoftclipError
from softclip.launch import Job, JobFailed, Launcher, launcher_for, layered, uses_cluster
from softclip.sweep.space import grid_size
from softclip.sweep.spec import SweepSpec, sweep_dir
from softclip.sweep.study import (
    Heartbeat,
    best_of,
    fail_stale_trials,
    open_study,
    redact_url,
    resolve_storage_url,
)
from softclip.sweep.trial import failures
from softclip.sweep.worker import JOB_ATTR, SURPLUS_ATTR, WorkerTask, run_worker

log = logging.getLogger("softclip.sweep")


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


def count_states(study: optuna.Study) -> Counter[str]:
    """Trials per state; FAIL trials a worker declined as surplus are counted as ``SURPLUS``."""
    return Counter("SURPLUS" if SURPLUS_ATTR in t.user_attrs else t.state.name for t in study.get_trials(deepcopy=False))


class SweepDriver:
    """Holds the study, the launcher and the worker jobs for one :func:`run_sweep` call."""

    def __init__(self, spec: SweepSpec, launcher: Launcher, target: int, storage_url: str) -> None:
        self.spec, self.launcher, self.target, self.url = spec, launcher, target, storage_url
        self.study = open_study(spec, storage_url)
        self.storage = self.study._storage
        self.workers: list[Job] = []
        self.started = 0
        self.heartbeat = Heartbeat(self.storage, spec.heartbeat_interval)
        self.max_failures = spec.max_failures or max(target, 3)
        self._last_stale_check = 0.0

    def start_workers(self, counts: Counter[str]) -> None:
        """Start workers (one array) up to ``max_parallel`` alive and the trials nobody runs yet.

        Every live worker covers a trial: the one it runs, or, still queued or starting, the one it will ask
        for. So a worker waiting in the SLURM queue is not joined by a second one for the same trial.
        """
        covered = max(counts["RUNNING"], len(self.workers))
        left = self.target - counts["COMPLETE"] - counts["PRUNED"] - covered
        n = min(self.launcher.max_parallel - len(self.workers), left)
        if n <= 0:
            return
        dump = self.spec.model_dump(mode="json")  # workers may start elsewhere: paths made absolute here
        dump.update(source=str(Path(self.spec.source).resolve()), output_dir=str(Path(self.spec.output_dir).resolve()))
        tasks = [(WorkerTask(dump, self.url, self.target, self.started + i, self.max_failures),) for i in range(n)]
        self.started += n
        jobs = self.launcher.submit_many(run_worker, tasks)
        self.workers += jobs
        log.info("started %d worker(s): %s", n, ", ".join(job.job_id for job in jobs))

    def collect(self, timeout: float) -> None:
        for job in self.launcher.wait(self.workers, timeout):
            self.workers.remove(job)
            try:
                log.info("worker %s ended: %s", job.job_id, json.dumps(job.result()))
            except JobFailed as err:  # its trials go stale and are retried
                log.warning("worker %s was lost: %s", job.job_id, str(err).splitlines()[0])

    def keep_alive(self) -> None:
        """Beat for the RUNNING trials of worker jobs that are still alive (a requeued job resumes them)."""
        alive = {job.job_id for job in self.workers}
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self.heartbeat.replace({t._trial_id for t in running if t.system_attrs.get(JOB_ATTR) in alive})

    def check_stale(self) -> None:
        now = time.monotonic()
        if now - self._last_stale_check < max(1.0, self.spec.heartbeat_interval / 2):
            return
        self._last_stale_check = now
        for number in fail_stale_trials(self.study, self.spec.effective_grace, self.spec.max_retry):
            log.warning("trial %d was stale (no heartbeat for %ds): failed and re-enqueued", number,
                        self.spec.effective_grace)  # fmt: skip

    def run(self, poll: float) -> Counter[str]:
        with self.heartbeat:
            try:
                while True:
                    self.check_stale()
                    counts = count_states(self.study)
                    if counts["COMPLETE"] + counts["PRUNED"] >= self.target:
                        return counts  # workers still alive have nothing left to run
                    if failures(self.study) >= self.max_failures:
                        raise SweepError(f"{failures(self.study)} trials failed (max_failures={self.max_failures}); "
                                         f"see `softclip sweep {self.spec.source} --status`")  # fmt: skip
                    self.start_workers(counts)
                    self.keep_alive()
                    if self.workers:
                        self.collect(poll)
                    else:
                        time.sleep(poll)  # trials still RUNNING for lost workers: wait until they go stale
            finally:
                for job in self.workers:
                    job.cancel()


def make_sweep_launcher(spec: SweepSpec, name: str | None, workers: int | None, cfg_launcher: Any) -> Launcher:
    """The launcher from CLI flags > the sweep file's ``launcher`` > the base config's ``launcher``."""
    config = layered(cfg_launcher, spec.launcher.model_dump(), {"name": name, "workers": workers})
    cluster = load_cluster(config.cluster) if uses_cluster(config.name) else None
    if cluster is not None and cluster.nodes * cluster.tasks_per_node > 1 and spec.pruner.name != "none":
        # a pruned rank 0 would leave the other ranks waiting at the trainer's evaluation barrier
        raise ConfigError(f"{spec.source}: pruner.name={spec.pruner.name!r} needs single-task jobs; the cluster "
                          f"runs {cluster.nodes}x{cluster.tasks_per_node} tasks per job (use pruner.name: none)")
    return launcher_for(config, folder=sweep_dir(spec) / "jobs", job_name=spec.name)


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
    best = [{"number": t.number, "values": t.values, "params": t.params} for t in best_of(driver.study)]
    return SweepResult(driver.study.study_name, url, folder, dict(counts), best)
