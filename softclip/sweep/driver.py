"""``run_sweep``: create (or resume) the study, then run its Optuna workers as one job array and wait for it;
``sweep_status``: the trials table, the best so far and the failures, as text.

There is no supervisor: the workers stop themselves (Optuna's ``MaxTrialsCallback``), Optuna's heartbeat fails
and re-enqueues a lost worker's trial, and a requeued job resumes its own. Before launching, trials whose
heartbeat went stale are failed and re-enqueued (:func:`~softclip.sweep.study.fail_stale`); trials RUNNING for a
live worker (another driver's) are waited for, so two drivers of one sweep never run more than ``n_trials``.
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

from softclip.atomic import write_json, write_text
from softclip.config import ConfigError, LauncherConfig, base_data, build_run_config
from softclip.errors import SoftclipError
from softclip.launch import Launcher, launcher_for
from softclip.runfiles import MANIFEST
from softclip.sweep.space import grid_size
from softclip.sweep.study import (
    JOURNAL_PREFIX,
    dashboard_command,
    fail_stale,
    journal_path,
    open_study,
    redact_url,
    resolve_storage_url,
    run_key,
)
from softclip.sweep.worker import ERROR_ATTR, SURPLUS_ATTR, WorkerTask, failures, run_worker
from softclip.sweep_spec import SweepSpec, sweep_dir

log = logging.getLogger("softclip.sweep")


class SweepError(SoftclipError, RuntimeError):
    """The sweep cannot go on (too many failed trials)."""


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns (``waited``: trials of other workers it waited for)."""

    study_name: str
    storage_url: str
    sweep_dir: Path
    counts: dict[str, int]
    best: list[dict[str, Any]] = field(default_factory=list)
    waited: int = 0


def target_trials(spec: SweepSpec, n_trials: int | None = None) -> int:
    """COMPLETE + PRUNED trials to reach: ``--n-trials``, else the file's ``n_trials``, else the grid's size."""
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


def make_sweep_launcher(spec: SweepSpec, name: str | None, workers: int | None, cfg_launcher: LauncherConfig) -> Launcher:
    """The launcher from CLI flags > the sweep file's ``launcher`` > the base config's ``launcher``."""
    chosen = launcher_for(cfg_launcher, spec.launcher.model_dump(), {"name": name, "workers": workers},
                          folder=sweep_dir(spec) / "jobs", job_name=spec.name)  # fmt: skip
    tasks = chosen.cluster.nodes * chosen.cluster.tasks_per_node if chosen.uses_cluster and chosen.cluster else 1
    if tasks > 1 and spec.pruner.name != "none":  # a pruned rank 0 would leave the other ranks at a barrier
        raise ConfigError(f"{spec.source}: pruner.name={spec.pruner.name!r} needs single-task jobs; the cluster "
                          f"runs {tasks} tasks per job (use pruner.name: none)")
    return chosen


def write_record(spec: SweepSpec, path: Path) -> None:
    """The sweep as run, beside its results; the copy never holds the database password."""
    copy = spec.model_dump(mode="json")
    if copy.get("storage"):
        copy["storage"] = redact_url(copy["storage"])
    write_text(path, yaml.safe_dump(copy, sort_keys=False))


def write_manifest(study: optuna.Study, spec: SweepSpec, folder: Path) -> Path:
    """``<sweep_dir>/manifest.json``: the run folder of every seed of every COMPLETE trial, for the report
    (variant ``t<run key>``; the report derives factors and labels from the searched keys)."""
    runs = [{"ablation": spec.name, "variant": f"t{run_key(t):04d}", "seed": seed, "run_dir": run_dir,
             "trial": t.number} for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            for seed, run_dir in zip(spec.seeds, t.user_attrs.get("run_dirs", []), strict=False)]  # fmt: skip
    return write_json(folder / MANIFEST, {"sweep": spec.name, "study": study.study_name, "runs": runs})


def run_sweep(spec: SweepSpec, launcher: str | None = None, n_trials: int | None = None, workers: int | None = None,
              overwrite: bool = False) -> SweepResult:  # fmt: skip
    """Run (or resume) the sweep until ``n_trials`` trials are COMPLETE or PRUNED.

    Args:
        spec: the loaded sweep (:func:`softclip.sweep.load_sweep`).
        launcher: launcher name (default: the sweep file's, else the base config's ``launcher.name``).
        n_trials: overrides the file's ``n_trials``.
        workers: workers at once (default: the file's, else the base config's ``launcher.workers``).
        overwrite: delete a study of the same name whose identity differs, instead of refusing it.
    """
    target = target_trials(spec, n_trials)
    folder = sweep_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(spec.storage, folder)
    record = folder / "sweep.yaml"  # the file this study was started from: never rewritten on resume
    if not record.is_file():
        write_record(spec, record)
    study = open_study(spec, url, overwrite=overwrite)  # refuses a study of another identity
    if overwrite:
        write_record(spec, record)
    cfg = build_run_config(base_data(spec), {}, spec.source)
    chosen = make_sweep_launcher(spec, launcher, workers, cfg.launcher)  # a bad launcher fails before any wait
    max_failures = spec.max_failures or max(target, 3)
    dump = spec.model_dump(mode="json")  # workers may start elsewhere: paths made absolute here
    dump.update(source=str(Path(spec.source).resolve()), output_dir=str(Path(spec.output_dir).resolve()))
    waited: set[int] = set()
    finished = -1
    while True:  # one array per pass; a second pass only for trials of workers lost during the first
        for number in fail_stale(study, spec, url):
            log.warning("trial %d was stale (no heartbeat for %ds): failed and re-enqueued", number,
                        spec.effective_grace)  # fmt: skip
        counts = count_states(study)
        done = counts["COMPLETE"] + counts["PRUNED"]
        left = target - done - counts["RUNNING"]
        if done >= target or failures(study) >= max_failures:
            break
        if left <= 0:  # running trials cover the target: another driver's workers, or lost ones not yet stale
            running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            if not waited.issuperset(running):
                log.info("waiting for %d running trial(s) of other workers", len(running))
            waited |= running
            time.sleep(min(spec.heartbeat_interval, spec.effective_grace))
            continue
        if done == finished:  # the last pass finished nothing
            break
        finished = done
        if spec.trial == "train":  # generate the data once here, not racing in the trials
            from softclip.data.synth.roots import ensure

            ensure(cfg.data)
        n = min(chosen.max_parallel, left)
        log.info("sweep %s: %d trials to go, %d worker(s) on %s, storage %s", spec.name, left, n, chosen.name,
                 redact_url(url))  # fmt: skip
        for outcome in chosen.map(run_worker, [(WorkerTask(dump, url, target, i, max_failures),) for i in range(n)]):
            if not outcome.ok:  # its trials go stale and are retried by the others or the next pass
                log.warning("worker %s was lost: %s", outcome.job_id, (outcome.error or "").splitlines()[0])
    write_manifest(study, spec, folder)
    if failures(study) >= max_failures:
        raise SweepError(f"{failures(study)} trials failed (max_failures={max_failures}); "
                         f"see `softclip sweep {spec.source} --status`")  # fmt: skip
    best = [{"number": t.number, "values": t.values, "params": t.params} for t in study.best_trials]
    return SweepResult(study.study_name, url, folder, dict(count_states(study)), best, len(waited))


def sweep_status(spec: SweepSpec, storage_url: str | None = None) -> str:
    """Text report of a sweep's study: counts, one row per trial (Optuna's ``trials_dataframe``), the best
    trial or Pareto front, and the first line of each failure."""
    url = storage_url or resolve_storage_url(spec.storage, sweep_dir(spec))
    missing = f"sweep {spec.name}: no study {spec.study_name or spec.name!r} in {redact_url(url)} yet"
    local = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
    local = journal_path(url) if url.startswith(JOURNAL_PREFIX) else local
    if local is not None and not local.is_file():  # opening it would create it
        return missing
    try:
        study = open_study(spec, url, create=False)
    except KeyError:
        return missing
    trials, counts = study.get_trials(deepcopy=False), count_states(study)
    try:
        target: Any = target_trials(spec)
    except ConfigError:  # status works without n_trials
        target = "?"
    table = study.trials_dataframe(attrs=("number", "state", "params", "values"))
    if trials:
        table.insert(2, "run", [run_key(t) for t in trials])
        table["step"] = [max(t.intermediate_values, default=None) for t in trials]
        table["secs"] = [round(t.duration.total_seconds()) if t.duration else None for t in trials]
    lines = [f"sweep {spec.name}  storage {redact_url(url)}  (watch: {' '.join(dashboard_command(url))})",
             f"finished {counts['COMPLETE'] + counts['PRUNED']}/{target} "
             f"({', '.join(f'{k.lower()} {v}' for k, v in sorted(counts.items()))})", "",
             table.to_string(index=False, float_format="{:.4g}".format) if trials else "no trials", ""]  # fmt: skip
    best = study.best_trials
    if best:
        label = "best" if len(best) == 1 else f"Pareto front ({len(best)} trials)"
        lines.append(f"{label} ({', '.join(f'{o.metric} {o.direction}' for o in spec.objective)}):")
        lines += [f"  trial {t.number}: {', '.join(f'{v:.4g}' for v in t.values)}  {json.dumps(t.params)}" for t in best]
    else:
        lines.append("best: no complete trial yet")
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed:
        lines += ["", f"failures ({len(failed)}):"]
        lines += [f"  trial {t.number}: "
                  + (t.user_attrs.get(ERROR_ATTR) or "stale: no heartbeat (worker lost), re-enqueued").splitlines()[0]
                  for t in failed]  # fmt: skip
    return "\n".join(lines)
