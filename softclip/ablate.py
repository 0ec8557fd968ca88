"""Ablation grids from ablation YAML: variants (override sets) x seeds, run through any launcher.

An ablation file::

    name: disentangle                # manifest runs/ablations/<profile>/<name>/manifest.json
    base: base.yaml                  # the run config every variant starts from (relative to this file)
    overrides: {train.steps: 800}    # applied to every variant
    variants:                        # name -> dotted overrides (a mapping, or a list of key=value strings)
      infonce: {loss.target: hard, loss.soft_weight: 0.0, loss.re_weight: 0.0}
      soft_re: {}
    baseline: infonce                # the variant every other one is compared with in reports (optional)
    compare_within: []               # factor names: compare each variant with the one equal to it on these
                                     # factors and to ``baseline`` on the others (e.g. [noise]: per noise level)
    labels: {soft_re: "+soft +RE"}   # display names (optional; default: the variant name)
    factors: {infonce: {method: CLIP}}  # named variables of a variant for figures, e.g. noise level (optional)
    seeds: [0, 1, 2]
    profiles: {smoke: {seeds: [0]}}  # overlays on this file; --profile also selects the base config's profile
    exclude: []                      # variants left out (in a profile: e.g. one its data cannot run)

A run folder is named once, by its identity: ``<output_dir>/<profile>/runs/s<seed>-<hash>/``, so runs shared by
two ablations (or variants) train once. Each ablation's ``manifest.json`` says which runs it uses, for
``softclip report``. A run whose folder holds ``done.json``, the suite's result JSON and the same config is
finished and skipped on re-run; a finished run in the layout before manifests (``<name>/<variant>/s<seed>``) is
used where it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
from softclip.identity import identity_hash, run_identity
from softclip.launch import Launcher, Outcome, distributed_rank, launcher_for
from softclip.resources import resolve
from softclip.runfiles import CONFIG, DONE, EVAL, MANIFEST, POOL

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
    root, pool = ablation_root(spec), runs_pool(spec)
    jobs = []
    primary = spec.primary and {"contrasts": [list(p) for p in spec.primary_pairs()], "metrics": spec.primary.metrics}
    for order, (variant, overrides) in enumerate(spec.variants.items()):
        for seed in spec.seeds:
            source = f"{spec.source} (variant {variant})"
            cfg = build_run_config(base, overrides, source, seed=seed, name=f"{spec.name}-{variant}-s{seed}",
                                   output_dir=str(pool), profile=spec.profile)  # fmt: skip
            cfg = _own_data_root(cfg, base_cfg)
            try:  # a degenerate objective is refused when the grid is planned, not when its run starts
                check_trainable(cfg)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
            key = identity_hash(run_identity(cfg.to_dict()))
            run_dir = pool / f"s{seed}-{key}"
            legacy = root / variant / f"s{seed}"  # the layout before manifests: a finished run there is used
            if not (run_dir / DONE).is_file() and is_finished(legacy, cfg.eval.suite, cfg.to_dict()):
                run_dir = legacy
            meta = {
                "ablation": spec.name, "variant": variant, "label": spec.labels.get(variant, variant),
                "seed": seed, "profile": spec.profile, "baseline": spec.baseline_of(variant),
                "factors": spec.factors.get(variant, {}), "description": spec.description, "order": order,
                "seeds": list(spec.seeds), "primary": primary,
                "identity": key,
            }  # fmt: skip
            jobs.append(AblationJob(variant, seed, str(run_dir), cfg.to_dict(), cfg.eval.suite, meta))
    check_data_roots(jobs)
    return jobs


def _own_data_root(cfg: Config, base: Config) -> Config:
    """A variant that changes ``data.synth`` but keeps the base ``data.root`` gets ``<root>-<spec hash>``.

    So the caption-noise and detector-quality variants each generate (once, shared by every seed and by the
    variants with the same spec) their own SynthScenes copy instead of racing for the base one.
    """
    if cfg.data.source != "synth" or cfg.data.root != base.data.root or cfg.data.synth == base.data.synth:
        return cfg
    digest = hashlib.sha256(json.dumps(cfg.data.synth.model_dump(mode="json"), sort_keys=True).encode())
    data = cfg.data.model_copy(update={"root": f"{cfg.data.root}-{digest.hexdigest()[:8]}"})
    return cfg.model_copy(update={"data": data})


def ablation_root(spec: AblationSpec) -> Path:
    """``<output_dir>/<profile>/<name>`` (``<output_dir>/<name>`` without a profile), absolute: the manifest."""
    return runs_pool(spec).parent / spec.name


def runs_pool(spec: AblationSpec) -> Path:
    """``<output_dir>/<profile>/runs``: the run folders of every ablation of the profile, named by identity."""
    parts = [spec.profile] if spec.profile else []
    return Path(spec.output_dir, *parts, "runs").resolve()


def check_data_roots(jobs: list[AblationJob]) -> None:
    """Jobs sharing a generated ``data.root`` must ask for the same SynthScenes spec (else they would race)."""
    seen: dict[str, tuple[Any, str]] = {}
    for job in jobs:
        data = job.config["data"]
        if data.get("source") != "synth":
            continue
        root = str(Path(data["root"]).resolve())
        first = seen.setdefault(root, (data.get("synth"), job.variant))
        if first[0] != data.get("synth"):
            raise ConfigError(
                f"variants {first[1]!r} and {job.variant!r} generate different SynthScenes data into the same "
                f"data.root={data['root']!r}; give each data.synth setting its own data.root"
            )


def prepare_data(jobs: list[AblationJob]) -> list[str]:
    """Generate every SynthScenes ``data.root`` the jobs need, once, before they start; returns the roots."""
    from softclip.train.run import ensure_synth_data

    check_data_roots(jobs)
    done: list[str] = []
    for job in jobs:
        data = Config.model_validate(job.config).data
        if data.source == "synth" and data.root not in done:
            ensure_synth_data(data, workers=os.cpu_count() or 1)  # nothing else runs yet: use every core
            done.append(data.root)
    return done


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


def expected_benchmarks(suite: str) -> list[str]:
    """Benchmark names of an evaluation suite (its result files are ``eval/<benchmark>.json``)."""
    from softclip.evaluation import read_suite

    spec, _ = read_suite(suite)
    return list(spec.benchmarks)


def is_finished(run_dir: str | Path, suite: str, config: dict[str, Any] | None = None) -> bool:
    """``done.json`` present, a result ``eval/<benchmark>.json`` for every benchmark of the suite and, when
    ``config`` is given, the run's ``config.yaml`` equal to it (up to where the run lives and launches)."""
    from softclip.train.rundir import config_diff

    run_dir = Path(run_dir)
    if not (run_dir / DONE).is_file():
        return False
    if config is not None and (not (run_dir / CONFIG).is_file() or config_diff(read_yaml(run_dir / CONFIG), config)):
        return False
    return all((run_dir / EVAL / f"{name}.json").is_file() for name in expected_benchmarks(suite))


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
