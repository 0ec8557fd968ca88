"""Ablation grids: variants (override sets) x seeds, planned into run folders named by identity and run as one
job array of chunks through any launcher. Each ablation's ``manifest.json`` says which run folders it uses (a run
shared by two ablations trains once), for ``softclip report``. The file format is ``docs/ablations.md``, its
schema :mod:`softclip.ablation_spec`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from softclip.ablation_spec import AblationSpec
from softclip.atomic import write_json
from softclip.config import (
    Config,
    ConfigError,
    apply_profile,
    base_data,
    build_run_config,
    check_trainable,
    format_validation_error,
    read_yaml,
)
from softclip.data.synth import roots as synth
from softclip.identity import identity_hash, run_identity
from softclip.launch import Launcher, Outcome, distributed_rank, launcher_for
from softclip.resources import resolve
from softclip.runfiles import DONE, MANIFEST, POOL

log = logging.getLogger("softclip.ablate")


@dataclass(frozen=True)
class AblationJob:
    """One (variant, seed) run."""

    variant: str
    seed: int
    run_dir: str
    config: dict[str, Any]
    suite: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def load_ablation(
    path: str | Path, profile: str | None = None, seeds: list[int] | None = None, exclude: Sequence[str] = ()
) -> AblationSpec:
    """Read, overlay ``profiles[profile]`` (when the file has it), leave out the ``exclude``d variants too,
    validate, and check every variant's config."""
    path = resolve(path)
    data = read_yaml(path)
    profiles = data.get("profiles") or {}
    data = apply_profile(data, profile if profile in profiles else None, str(path))
    data.update(source=str(path), profile=profile)
    if seeds is not None:
        data["seeds"] = seeds
    if exclude:
        data["exclude"] = [*(data.get("exclude") or []), *exclude]
    try:
        spec = AblationSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, str(path), AblationSpec)) from None
    plan_jobs(spec)  # every variant must resolve to a valid run config
    return spec


def plan_jobs(spec: AblationSpec) -> list[AblationJob]:
    """Every (variant, seed) as a job with its resolved config; config errors name the variant."""
    base = base_data(spec)
    base_cfg = build_run_config(base, {}, spec.source, profile=spec.profile)
    pool = runs_pool(spec)
    jobs = []
    primary = spec.primary and {"contrasts": [list(p) for p in spec.primary_pairs()], "metrics": spec.primary.metrics}
    for order, (variant, overrides) in enumerate(spec.variants.items()):
        for seed in spec.seeds:
            source = f"{spec.source} (variant {variant})"
            cfg = build_run_config(base, overrides, source, seed=seed, name=f"{spec.name}-{variant}-s{seed}",
                                   output_dir=str(pool), profile=spec.profile)  # fmt: skip
            cfg = cfg.model_copy(update={"data": synth.own_root(cfg.data, base_cfg.data)})
            try:  # a degenerate objective is refused when the grid is planned, not when its run starts
                check_trainable(cfg)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
            key = identity_hash(run_identity(cfg.to_dict()))
            run_dir = pool / f"s{seed}-{key}"
            meta = {
                "ablation": spec.name, "variant": variant, "label": spec.labels.get(variant, variant),
                "seed": seed, "profile": spec.profile, "baseline": spec.baseline_of(variant),
                "factors": spec.factors.get(variant, {}), "description": spec.description, "order": order,
                "seeds": list(spec.seeds), "primary": primary,
                "identity": key,
            }  # fmt: skip
            jobs.append(AblationJob(variant, seed, str(run_dir), cfg.to_dict(), cfg.eval.suite, meta))
    synth.check_roots([(job.variant, job.config["data"]) for job in jobs])
    return jobs


def ablation_root(spec: AblationSpec) -> Path:
    """``<output_dir>/<profile>/<name>`` (``<output_dir>/<name>`` without a profile), absolute: the manifest."""
    return runs_pool(spec).parent / spec.name


def runs_pool(spec: AblationSpec) -> Path:
    """``<output_dir>/<profile>/runs``: the run folders of every ablation of the profile, named by identity."""
    parts = [spec.profile] if spec.profile else []
    return Path(spec.output_dir, *parts, "runs").resolve()


def prepare_data(jobs: list[AblationJob]) -> list[str]:
    """Generate every SynthScenes ``data.root`` the jobs read, once, before they start; returns the roots."""
    synth.check_roots([(job.variant, job.config["data"]) for job in jobs])
    return synth.prepare([Config.model_validate(job.config).data for job in jobs])


def dedupe(jobs: list[AblationJob]) -> tuple[list[AblationJob], list[tuple[AblationJob, AblationJob]]]:
    """The jobs with each run folder once, and ``(job, first)`` for the others that share ``first``'s folder."""
    first: dict[str, AblationJob] = {}
    for job in jobs:
        first.setdefault(job.run_dir, job)
    return list(first.values()), [(job, first[job.run_dir]) for job in jobs if first[job.run_dir] is not job]


def write_manifest(spec: AblationSpec, jobs: list[AblationJob]) -> Path:
    """``<ablation_root>/manifest.json``: which run folder each (variant, seed) of the ablation uses."""
    runs = [{**job.meta, "run_dir": job.run_dir} for job in jobs if job.meta.get("ablation") == spec.name]
    pool = runs_pool(spec) / POOL
    ablation_root(spec).mkdir(parents=True, exist_ok=True)
    pool.parent.mkdir(parents=True, exist_ok=True)
    if not pool.is_file():
        write_json(pool, {"note": "run folders named by identity; the ablations' manifest.json say which they use"})
    return write_json(ablation_root(spec) / MANIFEST, {"ablation": spec.name, "description": spec.description,
                                                       "baseline": spec.baseline, "runs": runs})  # fmt: skip


def run_ablation_job(job: AblationJob) -> dict[str, Any]:
    """Train (resuming) and evaluate one run; returns ``{variant, seed, run_dir, metrics}``."""
    from softclip.evaluation import evaluate_checkpoint, flat_metrics
    from softclip.evaluation.suite import preflight
    from softclip.train import train
    from softclip.train.rundir import check_owner

    run_dir, cfg = Path(job.run_dir), Config.model_validate(job.config)
    check_owner(run_dir, cfg)  # a folder holding no run, or another config's run, fails here, never re-evaluated as this
    if not (run_dir / DONE).is_file():  # the suite's datasets are parsed before the first step, not after training
        train(cfg, run_dir=run_dir, preflight=lambda: preflight(job.suite, cfg.data.root))
    metrics = flat_metrics(evaluate_checkpoint(run_dir, job.suite)) if distributed_rank() == 0 else {}  # rank 0 evaluates
    return {"variant": job.variant, "seed": job.seed, "run_dir": job.run_dir, "metrics": metrics}


@dataclass
class AblationResult:
    """What :func:`run_ablation` did: the planned jobs, the finished ones skipped, an outcome per run trained."""

    jobs: list[AblationJob]
    skipped: list[AblationJob]
    outcomes: list[Outcome]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def ablation_launcher(spec: AblationSpec, launcher: str | None = None, workers: int | None = None) -> Launcher:
    """The launcher named by the argument, else the ablation file, else the base config's ``launcher``."""
    cfg_launcher = build_run_config(base_data(spec), {}, spec.source).launcher
    return launcher_for(cfg_launcher, spec.launcher.model_dump(), {"name": launcher, "workers": workers},
                        folder=ablation_root(spec) / "jobs", job_name=spec.name)  # fmt: skip


def run_chunk(jobs: list[AblationJob]) -> list[dict[str, Any]]:
    """Body of one array task: train and evaluate ``jobs`` in turn, each as ``{"value": ...}`` or ``{"error":
    ...}`` (one failed run does not stop the others). Finished runs are skipped (a requeued task resumes the
    interrupted one from its checkpoint); a run another driver is training is waited for, then skipped."""
    from softclip.train.errors import RunLockedError
    from softclip.train.lock import wait_unlocked
    from softclip.train.rundir import is_finished

    out: list[dict[str, Any]] = []
    for job in jobs:
        summary = {"variant": job.variant, "seed": job.seed, "run_dir": job.run_dir}
        waited = False
        while True:
            waited = wait_unlocked(job.run_dir) or waited
            if is_finished(job.run_dir, job.suite, job.config):
                out.append({"value": {**summary, "skipped": True, "waited": waited}})
                break
            try:
                out.append({"value": run_ablation_job(job)})
            except RunLockedError:  # another driver took it between the check and the start: wait for it
                waited = True
                continue
            except Exception as err:  # noqa: BLE001 - a failed run is reported with the others
                out.append({"error": f"{type(err).__name__}: {err}\n{traceback.format_exc()}"})
            break
    return out


def chunks(jobs: list[AblationJob], launcher: Launcher) -> list[list[AblationJob]]:
    """One array task per ``max_parallel`` share of the runs, dealt round-robin: each task pays the job start
    and the imports once, and trains its runs in turn."""
    n = min(launcher.max_parallel, len(jobs))
    return [jobs[i::n] for i in range(n)]


def run_planned(chosen: Launcher, jobs: list[AblationJob]) -> AblationResult:
    """Run the unfinished ``jobs`` as one job array of chunks (data generated first); finished ones are skipped."""
    from softclip.train.rundir import is_finished

    todo = [j for j in jobs if not is_finished(j.run_dir, j.suite, j.config)]
    skipped = [j for j in jobs if j not in todo]
    for job in skipped:
        log.info("skip %s seed %d: finished (%s)", job.variant, job.seed, job.run_dir)
    if distributed_rank() == 0:
        prepare_data(todo)
    outcomes: list[Outcome] = []
    parts = chunks(todo, chosen) if todo else []
    for chunk, outcome in zip(parts, chosen.map(run_chunk, [(part,) for part in parts]), strict=True):
        results = outcome.value if outcome.ok else [{"error": outcome.error}] * len(chunk)
        for job, result in zip(chunk, results, strict=True):
            value = result.get("value") or {}
            if value.get("skipped"):  # finished by another driver meanwhile
                skipped.append(job)
                log.info("skip %s seed %d: %s", job.variant, job.seed,
                         "trained by another driver (waited for it)" if value.get("waited") else "finished")
                continue
            outcomes.append(Outcome((job,), outcome.job_id, result.get("value"), result.get("error")))
            status = "done" if outcomes[-1].ok else f"FAILED: {(outcomes[-1].error or '').splitlines()[0]}"
            log.info("%s %s seed %d %s", job.meta.get("ablation", ""), job.variant, job.seed, status)
    return AblationResult(jobs, skipped, outcomes)


def run_ablation(spec: AblationSpec, launcher: str | None = None, workers: int | None = None) -> AblationResult:
    """Run every unfinished (variant, seed) through the launcher; finished runs are skipped."""
    jobs = plan_jobs(spec)
    write_manifest(spec, jobs)
    return run_planned(ablation_launcher(spec, launcher, workers), dedupe(jobs)[0])
