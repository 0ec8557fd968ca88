"""Find run folders and read what the report needs from them: config, result JSON, ablation metadata.

A run folder holds ``config.yaml`` and ``eval/*.json``. An ablation's or sweep's ``manifest.json`` says which
run folders it uses and, per run, its variant, label, seed, order, baseline and factors (a sweep's entries
leave factors to be derived). Folders from before manifests: ``ablation.json`` beside the run when present;
otherwise the folder layout (:data:`LAYOUTS`, tried in order) with factors derived from the config keys that
tell variants apart.

Unreadable files never stop a report: each is logged, recorded in :attr:`Collection.skipped` and left out.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from softclip import runfiles
from softclip.identity import flatten
from softclip.report.runs import Collection, ReportError, Run, Skipped, as_order, is_number
from softclip.report.saved import drop_copies, runs_from_frame

__all__ = ["Collection", "ReportError", "Run", "Skipped", "is_number", "load_runs"]  # the data model, re-exported

log = logging.getLogger("softclip.report")

# Frame columns a factor may not shadow; such a factor is renamed ``factor_<name>``.
RESERVED = frozenset({"ablation", "variant", "label", "seed", "run", "run_dir", "benchmark", "metric", "key",
                      "value", "order", "baseline", "kind", "step"})  # fmt: skip
# Config keys that differ between runs without being what the ablation varies.
NOT_FACTORS = re.compile(r"^(name|seed|output_dir|run_dir)$|\.seed$")
MAX_LABEL_FACTORS = 3


# ------------------------------------------------------------------------------------------------ layouts

Identity = tuple[str, str, int | None]
LAYOUTS: list[tuple[str, Callable[[Path], Identity | None]]] = []


def layout(name: str) -> Callable[[Callable[[Path], Identity | None]], Callable[[Path], Identity | None]]:
    """Register a folder-layout rule (tried in registration order); duplicates raise."""

    def deco(fn: Callable[[Path], Identity | None]) -> Callable[[Path], Identity | None]:
        if any(name == known for known, _ in LAYOUTS):
            raise KeyError(f"layout {name!r} registered twice")
        LAYOUTS.append((name, fn))
        return fn

    return deco


@layout("sweep_trial")
def _sweep_trial(path: Path) -> Identity | None:
    """``runs/sweeps/<sweep>/trials/<sweep>-t0003-s0`` -> (sweep, t0003, 0)."""
    match = re.fullmatch(r".+-(t\d+)-s(\d+)", path.name)
    if match and path.parent.name == "trials":
        return path.parent.parent.name, match.group(1), int(match.group(2))
    return None


@layout("seed_folder")
def _seed_folder(path: Path) -> Identity | None:
    """``.../<ablation>/<variant>/s<seed>``; for ``<sweep>/trials/<n>/s<seed>`` the sweep is the ablation."""
    match = re.fullmatch(r"s(\d+)", path.name)
    if not match:
        return None
    ablation = path.parent.parent.name
    if ablation == "trials":
        ablation = path.parent.parent.parent.name
    return ablation, path.parent.name, int(match.group(1))


@layout("flat")
def _flat(path: Path) -> Identity | None:
    """Anything else: ``.../<ablation>/<run>``."""
    return path.parent.name or "runs", path.name, None


def identity_from_layout(path: Path) -> tuple[str, str, int | None, str]:
    """(ablation, variant, seed or None, rule name) from the un-resolved absolute path."""
    path = Path(os.path.abspath(path))
    for name, rule in LAYOUTS:
        found = rule(path)
        if found is not None:
            return (*found, name)
    raise AssertionError("the 'flat' layout always matches")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- discovery


def is_run_dir(path: Path) -> bool:
    """True for a folder holding ``config.yaml`` and at least one ``eval/*.json``."""
    evals = path / runfiles.EVAL
    return (path / runfiles.CONFIG).is_file() and evals.is_dir() and any(evals.glob("*.json"))


def _walk(path: Path, ancestors: frozenset[str]) -> list[Path]:
    """Run folders and manifests at or under ``path``; follows symlinks, never descends into a run folder, a
    folder with a manifest (it names its runs), the shared folder of runs named by identity, or a cycle."""
    if not path.is_dir():
        return []
    if is_run_dir(path):
        return [path]
    if (path / runfiles.MANIFEST).is_file():
        return [path / runfiles.MANIFEST]
    if ancestors and (path / runfiles.POOL).is_file():
        return []
    real = os.path.realpath(path)
    if real in ancestors:
        return []
    found: list[Path] = []
    for child in sorted(path.iterdir()):
        if not child.name.startswith(".") and child.is_dir():
            found.extend(_walk(child, ancestors | {real}))
    return found


def find_run_dirs(paths: Iterable[str | Path], skipped: list[Skipped]) -> list[Path]:
    """Expand globs and search folders recursively; missing inputs are recorded in ``skipped``."""
    found: dict[str, Path] = {}
    for raw in map(str, paths):
        if any(ch in raw for ch in "*?["):
            candidates = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
            if not candidates:
                skipped.append(Skipped(raw, "glob matched nothing"))
        elif Path(raw).exists():
            candidates = [Path(raw)]
        else:
            candidates = []
            skipped.append(Skipped(raw, "no such file or directory"))
        for cand in candidates:
            for run_dir in _walk(cand, frozenset()):
                found.setdefault(os.path.abspath(run_dir), run_dir)
    return list(found.values())


# ------------------------------------------------------------------------------------------------ reading


def read_json(path: Path, skipped: list[Skipped]) -> Any | None:
    """Parsed JSON, or None (logged and recorded) when the file cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        log.warning("skipping unreadable %s: %s", path, err)
        skipped.append(Skipped(str(path), f"unreadable JSON: {err}"))
        return None


def read_results(run_dir: Path, skipped: list[Skipped]) -> dict[str, dict[str, float]]:
    """``{benchmark: {metric: value}}`` from ``eval/*.json``; sub-folders and other files are ignored."""
    results: dict[str, dict[str, float]] = {}
    for path in sorted((run_dir / runfiles.EVAL).glob("*.json")):
        if not path.is_file():
            continue
        data = read_json(path, skipped)
        if data is None:
            continue
        metrics = data.get("metrics") if isinstance(data, dict) else None
        if not isinstance(metrics, dict):
            log.warning("skipping %s: no 'metrics' mapping", path)
            skipped.append(Skipped(str(path), "no 'metrics' mapping"))
            continue
        bench = str(data.get("benchmark") or path.stem)
        values = {str(k): float(v) for k, v in metrics.items() if is_number(v)}
        results.setdefault(bench, {}).update(values)
    return results


def _read_config(run_dir: Path, skipped: list[Skipped]) -> dict[str, Any] | None:
    path = run_dir / runfiles.CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        log.warning("skipping run %s: unreadable config.yaml: %s", run_dir, err)
        skipped.append(Skipped(str(path), f"unreadable YAML: {err}"))
        return None
    if not isinstance(data, dict):
        skipped.append(Skipped(str(path), "config.yaml is not a mapping"))
        return None
    return data


def read_meta(run_dir: Path, layout_ablation: str, skipped: list[Skipped]) -> tuple[dict[str, Any] | None, str]:
    """The ablation metadata that applies to ``run_dir`` and where it came from.

    A run folder reached through a symlink may be shared by several ablations; its own ``ablation.json`` then
    describes another ablation, so the path decides, helped by an ``ablation.json`` in the (real) variant folder.
    """
    via_link = os.path.realpath(run_dir) != os.path.abspath(run_dir)
    own = run_dir / runfiles.ABLATION
    if own.is_file():
        meta = runfiles.read_ablation_meta(own)  # a damaged one is an error naming it (issue 33), not a phantom
        if isinstance(meta, dict) and not (via_link and meta.get("ablation") not in (None, layout_ablation)):
            return meta, runfiles.ABLATION
    above = run_dir.parent / runfiles.ABLATION
    if via_link and above.is_file():
        meta = read_json(above, skipped)
        if isinstance(meta, dict) and meta.get("ablation") in (None, layout_ablation):
            return meta, "variant ablation.json"
    return None, "layout"


def read_manifest(path: Path, skipped: list[Skipped]) -> list[dict[str, Any]]:
    """The run records of a ``manifest.json`` whose folders hold results (unfinished runs are left out)."""
    data = read_json(path, skipped)
    records = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("run_dir") for r in records):
        skipped.append(Skipped(str(path), "not a manifest: no 'runs' list of records with a run_dir"))
        return []
    unfinished = [r for r in records if not is_run_dir(Path(r["run_dir"]))]
    if unfinished:
        log.info("%s: %d of %d runs have no results yet", path, len(unfinished), len(records))
    return [r for r in records if is_run_dir(Path(r["run_dir"]))]


def read_run(run_dir: Path, skipped: list[Skipped], record: dict[str, Any] | None = None) -> Run | None:
    """One :class:`Run` (its metadata from a manifest ``record`` when given), or None when its config is
    unreadable."""
    config = _read_config(run_dir, skipped)
    if config is None:
        return None
    ablation, variant, layout_seed, rule = identity_from_layout(run_dir)
    if record is not None:
        meta, source = record, "manifest" if "factors" in record else "manifest:derived"
    else:
        meta, source = read_meta(run_dir, ablation, skipped)
    meta = meta or {}
    factors = meta.get("factors") if isinstance(meta.get("factors"), dict) else {}
    seed = next((s for s in (meta.get("seed"), config.get("seed"), layout_seed) if is_number(s)), 0)
    variant = str(meta.get("variant") or variant)
    baseline = meta.get("baseline")
    return Run(
        path=run_dir, ablation=str(meta.get("ablation") or ablation), variant=variant,
        label=str(meta.get("label") or variant), seed=int(seed), name=str(config.get("name") or run_dir.name),
        order=as_order(meta.get("order")), baseline=str(baseline) if baseline else None,
        factors={_factor_name(k): _scalar(v) for k, v in factors.items()}, config=flatten(config),
        results=read_results(run_dir, skipped), meta_source=source if meta else f"layout:{rule}", record=meta,
    )  # fmt: skip


def _factor_name(name: Any) -> str:
    name = str(name)
    return f"factor_{name}" if name in RESERVED else name


def _scalar(value: Any) -> Any:
    """Factor values go into frame columns: lists and mappings become their JSON text."""
    return _hashable(value) if isinstance(value, list | dict | tuple) else value


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def derive_factors(runs: list[Run]) -> None:
    """Give layout-only runs factors: config keys constant within each variant, varying across variants."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.meta_source.startswith(("layout", "manifest:derived")):
            groups[run.ablation].append(run)
    for members in groups.values():
        keys = sorted({k for run in members for k in run.config if not NOT_FACTORS.search(k)})
        for key in keys:
            per_variant: dict[str, set[str]] = defaultdict(set)
            for run in members:
                per_variant[run.variant].add(_hashable(run.config.get(key)))
            constant = all(len(vals) == 1 for vals in per_variant.values())
            if constant and len(set.union(*per_variant.values())) > 1:
                for run in members:
                    run.factors[_factor_name(key)] = _scalar(run.config.get(key))
        _factor_labels(members)


def _factor_labels(members: list[Run]) -> None:
    """Label layout-only variants by their factors when there are a few (``beta=0.1, tau=0.05`` for sweep trials)."""
    keys = sorted({k for run in members for k in run.factors})
    short = [k.rsplit(".", 1)[-1] for k in keys]
    if not 1 <= len(keys) <= MAX_LABEL_FACTORS or len(set(short)) < len(short):
        return
    for run in members:
        run.label = ", ".join(f"{s}={run.factors.get(k)}" for s, k in zip(short, keys, strict=True))


def load_runs(paths: Iterable[str | Path]) -> Collection:
    """Find and read every run folder under ``paths``.

    The same real folder reached twice inside one ablation (overlapping inputs, symlinks) counts once; reached
    from two ablations (the runner symlinks a run shared by both) it is a row in each. A ``frame.csv`` written
    by an earlier report is read as the runs it holds (:func:`runs_from_frame`).

    Raises:
        ReportError: when no run folder is found, or when two different folders hold one (ablation, variant,
            seed).
    """
    inputs = [str(p) for p in paths]
    skipped: list[Skipped] = []
    frames = [p for p in inputs if p.endswith(".csv") and Path(p).is_file()]
    found = find_run_dirs([p for p in inputs if p not in frames], skipped)
    manifests = [p for p in found if p.name == runfiles.MANIFEST and p.is_file()]
    records = [(Path(r["run_dir"]), r) for m in manifests for r in read_manifest(m, skipped)]
    listed = {os.path.realpath(run_dir) for run_dir, _ in records}
    plain = [(p, None) for p in found if p not in manifests and os.path.realpath(p) not in listed]
    runs: list[Run] = []
    for path in frames:
        runs.extend(runs_from_frame(Path(path)))
    if not records and not plain and not runs:
        raise ReportError(
            "no run folders (config.yaml + eval/*.json) found under: " + (", ".join(inputs) or "<no paths given>")
        )
    seen: set[tuple[str, str]] = set()
    for run_dir, record in [*records, *plain]:
        run = read_run(run_dir, skipped, record)
        if run is None:
            continue
        key = (run.ablation, os.path.realpath(run_dir))
        if key in seen:
            continue
        seen.add(key)
        runs.append(run)
    derive_factors(runs)
    notes: list[str] = []
    return Collection(runs=drop_copies(runs, notes), skipped=skipped, inputs=inputs, notes=notes)
