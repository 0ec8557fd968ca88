"""``softclip reproduce``: every ablation table and the β×τ sweep of one profile, then their report.

The parts (a registry, in report order) are the shipped ablation and sweep files. Their runs are planned
together: a run folder is named by its identity, so identical runs train once (the CLIP baseline of ``main`` is
the ``hard`` variant of ``targets``, ...) and each ablation's manifest points at it. The unfinished runs go out
as one job array, then ``softclip report`` writes ``reports/<profile>/`` from the manifests. A re-run skips
finished runs and finished sweep trials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softclip import ablate
from softclip.ablation_spec import AblationSpec
from softclip.config import ConfigError
from softclip.resources import data_file

log = logging.getLogger("softclip.reproduce")

ABLATIONS = (
    "main", "calibration", "targets", "disentangle", "divergence", "mechanism", "mu", "aggregation", "noise", "detector",
    "one_hot_rows", "zoo",
)
# name -> (kind, file relative to the repository root), in the order the report lists them
PARTS: dict[str, tuple[str, str]] = {name: ("ablation", f"ablations/{name}.yaml") for name in ABLATIONS}
PARTS["beta_tau"] = ("sweep", "sweeps/beta_tau.yaml")
PROFILE_PARTS = {"rehearsal": ("main",)}  # the rehearsal checks the paper path with the main table's runs only


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did: runs planned, trained now, reused, failed, and the report written."""

    planned: int = 0
    unique: int = 0
    trained: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    sweeps: dict[str, dict[str, int]] = field(default_factory=dict)
    report: Path | None = None
    seconds: float = 0.0


def select_parts(only: list[str] | None, profile: str | None = None) -> list[str]:
    """The part names to run, in registry order; unknown names are a ConfigError listing the known ones."""
    names = list(PARTS)
    if not only:
        return list(PROFILE_PARTS.get(profile or "", names))
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"--only: unknown part(s) {unknown}; known: {', '.join(names)}")
    return [n for n in names if n in only]


def plan(
    profile: str,
    parts: list[str],
    seeds: list[int] | None = None,
    cluster: str | Path | None = None,
    exclude: Sequence[str] = (),
) -> tuple[list[AblationSpec], list[Any]]:
    """Load the ablation and sweep files of ``parts`` in ``profile`` (every config checked before any run);
    ``cluster`` replaces every file's ``launcher.cluster``; ``exclude`` (``part.variant``) leaves variants out."""
    from softclip.config import with_cluster
    from softclip.sweep import load_sweep

    left_out: dict[str, list[str]] = {}
    for item in exclude:
        part, _, variant = item.partition(".")
        if part not in parts or PARTS[part][0] != "ablation" or not variant:
            ablations_run = ", ".join(n for n in parts if PARTS[n][0] == "ablation")
            raise ConfigError(f"--exclude {item!r}: expected <ablation>.<variant> with an ablation of this run "
                              f"({ablations_run})")  # fmt: skip
        left_out.setdefault(part, []).append(variant)
    ablations, sweeps = [], []
    for name in parts:
        kind, rel = PARTS[name]
        if kind == "ablation":
            spec = ablate.load_ablation(data_file(rel), profile=profile, seeds=seeds, exclude=left_out.get(name, []))
            ablations.append(with_cluster(spec, cluster))
        else:
            sweeps.append(with_cluster(load_sweep(data_file(rel), profile=profile), cluster))
    return ablations, sweeps


def run_ablations(
    specs: list[AblationSpec], launcher: str | None, workers: int | None, result: ReproduceResult
) -> list[ablate.AblationJob]:
    """Write every ablation's manifest, then train and evaluate each distinct run once through one launcher."""
    per_spec = [ablate.plan_jobs(spec) for spec in specs]
    jobs = [job for planned in per_spec for job in planned]
    unique, shared = ablate.dedupe(jobs)
    result.planned, result.unique = len(jobs), len(unique)
    log.info("%d ablation runs, %d distinct (%d shared between ablations)", len(jobs), len(unique), len(shared))
    for spec, planned in zip(specs, per_spec, strict=True):
        ablate.write_manifest(spec, planned)
    outcome = ablate.run_planned(ablate.ablation_launcher(specs[0], launcher, workers), unique)
    result.trained = len(outcome.outcomes) - len(outcome.failed)
    result.skipped = len(outcome.skipped)
    result.failed += [f"{o.args[0].meta['ablation']}/{o.args[0].variant}/s{o.args[0].seed}: "
                      f"{(o.error or '').splitlines()[0] if o.error else 'failed'}" for o in outcome.failed]  # fmt: skip
    return jobs


def reproduce(
    profile: str,
    *,
    launcher: str | None = None,
    workers: int | None = None,
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    out: str | Path | None = None,
    command: str | None = None,
    cluster: str | Path | None = None,
    exclude: Sequence[str] = (),
) -> ReproduceResult:
    """Run the named parts (default: all) of ``profile`` and write the report to ``out`` (reports/<profile>)."""
    from softclip.report import build_report
    from softclip.report.command import machine_info
    from softclip.sweep import run_sweep
    from softclip.sweep_spec import sweep_dir

    start = time.perf_counter()
    result = ReproduceResult()
    specs, sweeps = plan(profile, select_parts(only, profile), seeds, cluster, exclude)
    if profile == "rehearsal":  # its paper-shaped data written once, and eval/paper.yaml's variables set to it
        from softclip.data.synth.paper_shapes import ensure_rehearsal_data

        ensure_rehearsal_data({job.config["data"]["root"] for spec in specs for job in ablate.plan_jobs(spec)})
    jobs = run_ablations(specs, launcher, workers, result) if specs else []
    trial_dirs: list[str] = []
    for sweep in sweeps:
        done = run_sweep(sweep, launcher=launcher, workers=workers)
        result.sweeps[sweep.name] = done.counts
        trial_dirs.append(str(sweep_dir(sweep).resolve()))  # its manifest names the trials' run folders
    out = Path(out or Path("reports") / profile)
    cmd = command or f"softclip reproduce --profile {profile}"
    manifests = [str(ablate.ablation_root(spec)) for spec in specs]
    if any((Path(j.run_dir) / "done.json").is_file() for j in jobs) or trial_dirs:
        data = {"paper": "", "rehearsal": " rehearsal: the paper path for a few steps on paper-shaped SynthScenes, "
                "a check, not a result"}.get(profile, " on SynthScenes")  # fmt: skip
        result.report = build_report([*manifests, *trial_dirs], out, title=f"SoftCLIP{data} — {profile} profile",
                                     command=cmd, machine=machine_info())  # fmt: skip
    result.seconds = time.perf_counter() - start
    return result
