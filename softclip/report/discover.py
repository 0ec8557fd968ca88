"""Find run folders and read what the report needs from them: config, result JSON, ablation metadata.

A run folder holds ``config.yaml`` and ``eval/*.json``. Its ablation, variant, label, order, baseline and
factors come from ``ablation.json`` (written by the ablation runner) when present; otherwise from the folder
layout (:data:`LAYOUTS`, tried in order) with factors derived from the config keys that tell variants apart.

Unreadable files never stop a report: each is logged, recorded in :attr:`Collection.skipped` and left out.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from softclip import runfiles

log = logging.getLogger("softclip.report")

# Frame columns a factor may not shadow; such a factor is renamed ``factor_<name>``.
RESERVED = frozenset({"ablation", "variant", "label", "seed", "run", "run_dir", "benchmark", "metric", "key",
                      "value", "order", "baseline", "kind", "step"})  # fmt: skip
# Config keys that differ between runs without being what the ablation varies.
NOT_FACTORS = re.compile(r"^(name|seed|output_dir|run_dir)$|\.seed$")
MAX_LABEL_FACTORS = 3


class ReportError(ValueError):
    """Bad report input: no run folders, an unknown baseline or metric. The message names the paths/keys."""


@dataclass(frozen=True)
class Skipped:
    """A file (or path) left out of the report, and why."""

    path: str
    reason: str


@dataclass
class Run:
    """One run folder as the report sees it. ``config`` is flattened to dotted keys."""

    path: Path
    ablation: str
    variant: str
    label: str
    seed: int
    name: str
    order: float
    baseline: str | None
    factors: dict[str, Any]
    config: dict[str, Any]
    results: dict[str, dict[str, float]]
    meta_source: str


@dataclass
class Collection:
    """Everything :func:`load_runs` found: the runs, the skipped files and the inputs searched."""

    runs: list[Run]
    skipped: list[Skipped] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    """Run folders at or under ``path``; follows symlinks, never descends into a run folder or a cycle."""
    if not path.is_dir():
        return []
    if is_run_dir(path):
        return [path]
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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"beta": 0.3}}`` -> ``{"loss.beta": 0.3}`` (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def is_number(value: Any) -> bool:
    """A JSON number (bools excluded); NaN counts, it is reported as missing later."""
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        meta = read_json(own, skipped)
        if isinstance(meta, dict) and not (via_link and meta.get("ablation") not in (None, layout_ablation)):
            return meta, runfiles.ABLATION
    above = run_dir.parent / runfiles.ABLATION
    if via_link and above.is_file():
        meta = read_json(above, skipped)
        if isinstance(meta, dict) and meta.get("ablation") in (None, layout_ablation):
            return meta, "variant ablation.json"
    return None, "layout"


def _as_order(value: Any) -> float:
    return float(value) if is_number(value) else math.nan


def read_run(run_dir: Path, skipped: list[Skipped]) -> Run | None:
    """One :class:`Run`, or None when its config is unreadable."""
    config = _read_config(run_dir, skipped)
    if config is None:
        return None
    ablation, variant, layout_seed, rule = identity_from_layout(run_dir)
    meta, source = read_meta(run_dir, ablation, skipped)
    meta = meta or {}
    factors = meta.get("factors") if isinstance(meta.get("factors"), dict) else {}
    seed = next((s for s in (meta.get("seed"), config.get("seed"), layout_seed) if is_number(s)), 0)
    variant = str(meta.get("variant") or variant)
    baseline = meta.get("baseline")
    return Run(
        path=run_dir, ablation=str(meta.get("ablation") or ablation), variant=variant,
        label=str(meta.get("label") or variant), seed=int(seed), name=str(config.get("name") or run_dir.name),
        order=_as_order(meta.get("order")), baseline=str(baseline) if baseline else None,
        factors={_factor_name(k): _scalar(v) for k, v in factors.items()}, config=flatten(config),
        results=read_results(run_dir, skipped), meta_source=source if meta else f"layout:{rule}",
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
        if run.meta_source.startswith("layout"):
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


FRAME_COLUMNS = ("ablation", "variant", "label", "seed", "run", "benchmark", "metric", "value", "order", "key",
                 "baseline", "run_dir")  # fmt: skip


def runs_from_frame(path: Path) -> list[Run]:
    """The runs of a result frame that an earlier report saved (``frame.csv``): identity, factors (also as their
    dotted config keys) and results; what the frame does not hold (the rest of the config, curves) is absent.

    Raises:
        ReportError: the file is not such a frame (names the missing columns).
    """
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not a readable result frame: {err}") from err
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: not a result frame written by softclip report (no column {', '.join(missing)})")
    factor_cols = [c for c in frame.columns if c not in FRAME_COLUMNS]
    configs = saved_configs(path.with_name("configs.csv"))
    runs = []
    for (ablation, run_dir), group in frame.groupby(["ablation", "run_dir"], sort=False):
        head = group.iloc[0]
        factors = {c: head[c] for c in factor_cols if not pd.isna(head[c])}
        results: dict[str, dict[str, float]] = {}
        for rec in group.itertuples(index=False):
            results.setdefault(str(rec.benchmark), {})[str(rec.metric)] = float(rec.value)
        baseline = head["baseline"]
        runs.append(Run(
            path=Path(str(run_dir)), ablation=str(ablation), variant=str(head["variant"]), label=str(head["label"]),
            seed=int(head["seed"]), name=str(head["run"]), order=_as_order(head["order"]),
            baseline=str(baseline) if isinstance(baseline, str) and baseline else None, factors=factors,
            config={**factors, **configs.get((str(ablation), str(run_dir)), {})}, results=results,
            meta_source=f"frame:{path}",
        ))  # fmt: skip
    return runs


CONFIG_ID_COLUMNS = ("ablation", "variant", "label", "order", "seed", "run_dir")


def saved_configs(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(ablation, run_dir) -> the config values a report saved in ``configs.csv`` (empty when there is none)."""
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not a readable configs table: {err}") from err
    if not {"ablation", "run_dir"} <= set(table.columns):
        raise ReportError(f"{path}: not a configs table written by softclip report (no ablation/run_dir column)")
    keys = [c for c in table.columns if c not in CONFIG_ID_COLUMNS]
    return {(str(r["ablation"]), str(r["run_dir"])): {k: r[k] for k in keys if not pd.isna(r[k])}
            for r in table.to_dict("records")}  # fmt: skip


def run_bytes(run: Run) -> tuple[bytes, ...]:
    """What two copies of a run must share byte for byte: ``config.yaml`` and every ``eval/*.json`` (by name);
    for a run read from a saved frame, its factors and results."""
    if run.meta_source.startswith("frame:"):
        return (json.dumps([run.factors, run.results], sort_keys=True, default=str).encode(),)
    files = [run.path / runfiles.CONFIG, *sorted((run.path / runfiles.EVAL).glob("*.json"))]
    return tuple(part for f in files for part in (f.name.encode(), f.read_bytes()))


def drop_copies(runs: list[Run], notes: list[str]) -> list[Run]:
    """The runs with each (ablation, variant, seed) once.

    Byte-identical copies (:func:`run_bytes`) count once, with a note; different runs claiming the same
    (ablation, variant, seed) would be double-counted as seeds, so they are an error naming both folders.

    Raises:
        ReportError: two different run folders with the same (ablation, variant, seed).
    """
    first: dict[tuple[str, str, int], Run] = {}
    kept: list[Run] = []
    for run in runs:
        key = (run.ablation, run.variant, run.seed)
        if key not in first:
            first[key] = run
            kept.append(run)
            continue
        other = first[key]
        if run_bytes(run) != run_bytes(other):
            raise ReportError(
                f"ablation {run.ablation!r}, variant {run.variant!r}, seed {run.seed} is in two run folders that "
                f"differ: {other.path} and {run.path}; pass one of them (a seed may count only once)"
            )
        notes.append(f"{run.path} is a byte-identical copy of {other.path} "
                     f"({run.ablation}/{run.variant}, seed {run.seed}): counted once")  # fmt: skip
    return kept


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
    run_dirs = find_run_dirs([p for p in inputs if p not in frames], skipped)
    runs: list[Run] = []
    for path in frames:
        runs.extend(runs_from_frame(Path(path)))
    if not run_dirs and not runs:
        raise ReportError(
            "no run folders (config.yaml + eval/*.json) found under: " + (", ".join(inputs) or "<no paths given>")
        )
    seen: set[tuple[str, str]] = set()
    for run_dir in run_dirs:
        run = read_run(run_dir, skipped)
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
