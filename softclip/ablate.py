"""Ablation grids from ablation YAML: variants (override sets) x seeds, run through any launcher.

An ablation file::

    name: disentangle                # folder runs/ablations/<name>/<variant>/s<seed>
    base: base.yaml                  # the run config every variant starts from (relative to this file)
    overrides: {train.steps: 800}    # applied to every variant
    variants:                        # name -> dotted overrides (a mapping, or a list of key=value strings)
      infonce: {loss.target: hard, loss.soft_weight: 0.0, loss.re_weight: 0.0}
    seeds: [0, 1, 2]
    profiles: {smoke: {seeds: [0]}}  # overlays on this file; --profile also selects the base config's profile

Each job trains (resuming from its run folder) and evaluates the run's suite. A run whose folder holds
``done.json`` and the suite's result JSON is finished and skipped on re-run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from softclip.config import ConfigError, apply_profile, parse_override, read_yaml
from softclip.launch import Outcome, distributed_rank, load_cluster, make_launcher, run_jobs
from softclip.sweep.spec import LauncherSpec, SweepSpec, build_run_config
from softclip.sweep.spec import base_data as _base_data

log = logging.getLogger("softclip.ablate")
DONE = "done.json"


class AblationSpec(BaseModel):
    """An ablation file after its profile overlay."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    base: str = Field(description="run config, relative to the ablation file")
    overrides: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]]
    seeds: list[int] = Field(default_factory=lambda: [0])
    output_dir: str = "runs/ablations"
    launcher: LauncherSpec = Field(default_factory=LauncherSpec)
    source: str = "<ablation>"
    profile: str | None = None

    @field_validator("variants", mode="before")
    @classmethod
    def _variant_lists(cls, v: Any) -> Any:
        """Accept ``variant: [key=value, ...]`` as well as mappings; ``variant: {}`` or null = the base."""
        if not isinstance(v, dict):
            return v
        out = {}
        for name, overrides in v.items():
            if isinstance(overrides, list):
                pairs = [parse_override(str(text)) for text in overrides]
                overrides = {".".join(parts): value for parts, value in pairs}
            out[name] = overrides or {}
        return out

    @field_validator("variants")
    @classmethod
    def _some(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:
            raise ValueError("needs at least one variant")
        bad = [k for k in v if not k.replace("-", "_").replace("+", "_").replace(".", "_").isidentifier()]
        if bad:
            raise ValueError(f"variant names become folder names; use letters, digits, _ - + . ({bad})")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("needs at least one seed, without repeats")
        return v


@dataclass(frozen=True)
class AblationJob:
    """One (variant, seed) run."""

    variant: str
    seed: int
    run_dir: str
    config: dict[str, Any]
    suite: str


def load_ablation(path: str | Path, profile: str | None = None, seeds: list[int] | None = None) -> AblationSpec:
    """Read, overlay ``profiles[profile]`` (when the file has it), validate, and check every variant's config."""
    path = Path(path)
    data = read_yaml(path)
    profiles = data.get("profiles") or {}
    data = apply_profile(data, profile if profile in profiles else None, str(path))
    data.update(source=str(path), profile=profile)
    if seeds is not None:
        data["seeds"] = seeds
    try:
        spec = AblationSpec.model_validate(data)
    except ValidationError as err:
        lines = []
        for item in err.errors():
            key = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
            msg = "unknown key" if item["type"] == "extra_forbidden" else str(item.get("ctx", {}).get("error", item["msg"]))
            lines.append(f"{path}: {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    plan_jobs(spec)  # every variant must resolve to a valid run config
    return spec


def _as_sweep_like(spec: AblationSpec) -> SweepSpec:
    """Reuse the sweep's base-config resolution (profile + fixed overrides) for the ablation."""
    return SweepSpec(name=spec.name, base=spec.base, overrides=spec.overrides, space={},
                     objective=[{"metric": "-"}], source=spec.source, profile=spec.profile)  # fmt: skip


def plan_jobs(spec: AblationSpec) -> list[AblationJob]:
    """Every (variant, seed) as a job with its resolved config; config errors name the variant."""
    base = _base_data(_as_sweep_like(spec))
    root = (Path(spec.output_dir) / spec.name).resolve()
    jobs = []
    for variant, overrides in spec.variants.items():
        for seed in spec.seeds:
            run_dir = root / variant / f"s{seed}"
            source = f"{spec.source} (variant {variant})"
            cfg = build_run_config(base, overrides, source, seed=seed, name=f"{spec.name}-{variant}-s{seed}",
                                   output_dir=str(root / variant), profile=spec.profile)  # fmt: skip
            jobs.append(AblationJob(variant, seed, str(run_dir), cfg.to_dict(), cfg.eval.suite))
    return jobs


def expected_benchmarks(suite: str) -> list[str]:
    """Benchmark names of an evaluation suite (its result files are ``eval/<benchmark>.json``)."""
    from softclip.evaluation import read_suite

    spec, _ = read_suite(suite)
    return list(spec.benchmarks)


def is_finished(run_dir: str | Path, suite: str) -> bool:
    """``done.json`` present and an evaluation result ``eval/<benchmark>.json`` for every benchmark of the suite."""
    run_dir = Path(run_dir)
    if not (run_dir / DONE).is_file():
        return False
    return all((run_dir / "eval" / f"{name}.json").is_file() for name in expected_benchmarks(suite))


def run_ablation_job(job: AblationJob) -> dict[str, Any]:
    """Train (resuming) and evaluate one run; returns ``{variant, seed, run_dir, metrics}``."""
    from softclip.config import Config
    from softclip.evaluation import evaluate_checkpoint
    from softclip.sweep.trial import flatten_results
    from softclip.train import train

    run_dir = Path(job.run_dir)
    if not (run_dir / DONE).is_file():
        train(Config.model_validate(job.config), run_dir=run_dir)
    if distributed_rank() != 0:  # multi-task jobs: rank 0 evaluates
        return {"variant": job.variant, "seed": job.seed, "run_dir": job.run_dir, "metrics": {}}
    metrics = flatten_results(evaluate_checkpoint(run_dir, job.suite))
    return {"variant": job.variant, "seed": job.seed, "run_dir": job.run_dir, "metrics": metrics}


@dataclass
class AblationResult:
    jobs: list[AblationJob]
    skipped: list[AblationJob]
    outcomes: list[Outcome]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def run_ablation(
    spec: AblationSpec, launcher: str | None = None, workers: int | None = None, job_fn: Any = run_ablation_job
) -> AblationResult:
    """Run every unfinished (variant, seed) through the launcher; finished runs are skipped."""
    jobs = plan_jobs(spec)
    todo = [j for j in jobs if not is_finished(j.run_dir, j.suite)]
    skipped = [j for j in jobs if j not in todo]
    for job in skipped:
        log.info("skip %s seed %d: finished (%s)", job.variant, job.seed, job.run_dir)
    cfg_launcher = build_run_config(_base_data(_as_sweep_like(spec)), {}, spec.source).launcher
    ls = spec.launcher
    name = launcher or ls.name or cfg_launcher.name
    cluster = load_cluster(ls.cluster or cfg_launcher.cluster) if name in ("slurm", "submitit-local") else None
    folder = Path(cluster.folder) / spec.name if cluster else Path(spec.output_dir) / spec.name / "jobs"
    chosen = make_launcher(
        name, workers=workers or ls.workers or cfg_launcher.workers,
        cpus_per_job=ls.cpus_per_job or cfg_launcher.cpus_per_job,
        cpu_budget=ls.cpu_budget or cfg_launcher.cpu_budget, cluster=cluster, folder=folder, job_name=spec.name,
    )  # fmt: skip

    def report(outcome: Outcome) -> None:
        job = outcome.args[0]
        status = "done" if outcome.ok else f"FAILED: {(outcome.error or '').splitlines()[0]}"
        log.info("%s seed %d %s", job.variant, job.seed, status)

    with chosen:
        outcomes = run_jobs(chosen, job_fn, [(j,) for j in todo], on_done=report)
    return AblationResult(jobs, skipped, outcomes)
