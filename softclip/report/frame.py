"""Tidy frames from run folders: one row per (run, benchmark, metric), curves from ``metrics.jsonl``, configs.

The result frame has the columns ``ablation, variant, label, seed, run, benchmark, metric, value, order``, then
``key`` (``benchmark/metric``), ``baseline`` (the variant's comparison variant or empty: see
:func:`resolve_variant_baselines`), ``run_dir``, then one column per factor (``noise``, ``method``,
``loss.beta``, ...; missing where a run does not set it).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from softclip import runfiles
from softclip.report.discover import Collection, Run, Skipped, is_number, load_runs

log = logging.getLogger("softclip.report")

COLUMNS = ["ablation", "variant", "label", "seed", "run", "benchmark", "metric", "value", "order"]
EXTRA = ["key", "baseline", "run_dir"]
CURVE_COLUMNS = ["ablation", "variant", "label", "seed", "run", "order", "kind", "step", "key", "value", "run_dir"]


def _most_named(counts: Counter[str], allowed: set[str]) -> str | None:
    """The most counted name that is in ``allowed`` (ties by name), or None."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return next((name for name, _ in ranked if name in allowed), None)


def resolve_baselines(runs: Sequence[Run], override: str | None = None) -> dict[str, str | None]:
    """Each ablation's comparison variant: ``override`` where the ablation has it, else the one its runs name."""
    variants: dict[str, set[str]] = defaultdict(set)
    named: dict[str, Counter[str]] = defaultdict(Counter)
    for run in runs:
        variants[run.ablation].add(run.variant)
        if run.baseline:
            named[run.ablation][run.baseline] += 1
    out: dict[str, str | None] = {}
    for ablation in sorted(variants):
        if override is not None and override in variants[ablation]:
            out[ablation] = override
            continue
        out[ablation] = _most_named(named[ablation], variants[ablation])
    return out


def resolve_variant_baselines(runs: Sequence[Run], override: str | None = None) -> dict[tuple[str, str], str | None]:
    """Each (ablation, variant)'s comparison variant.

    ``override`` where the ablation has it; else the baseline the variant's runs name in ``ablation.json`` (the
    most named, ties by name) when it is a variant of that ablation; else the ablation's (:func:`resolve_baselines`).
    """
    variants: dict[str, set[str]] = defaultdict(set)
    named: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for run in runs:
        variants[run.ablation].add(run.variant)
        if run.baseline:
            named[(run.ablation, run.variant)][run.baseline] += 1
    per_ablation = resolve_baselines(runs, override)
    out: dict[tuple[str, str], str | None] = {}
    for ablation, names in variants.items():
        for variant in sorted(names):
            own = _most_named(named[(ablation, variant)], names)
            forced = override is not None and override in names
            out[(ablation, variant)] = per_ablation[ablation] if forced or own is None else own
    return out


def _variant_meta(runs: Sequence[Run]) -> dict[tuple[str, str], tuple[str, float]]:
    """(ablation, variant) -> (label, order), filled from whichever runs of the variant carry them."""
    labels: dict[tuple[str, str], str] = {}
    from_meta: set[tuple[str, str]] = set()  # a label from ablation metadata beats the folder name
    orders: dict[tuple[str, str], float] = {}
    for run in runs:
        key = (run.ablation, run.variant)
        has_meta = not run.meta_source.startswith("layout")
        if key not in labels or (has_meta and key not in from_meta):
            labels[key] = run.label
        if has_meta:
            from_meta.add(key)
        if not math.isnan(run.order):
            orders[key] = min(orders.get(key, math.inf), run.order)
    return {key: (labels[key], orders.get(key, math.nan)) for key in labels}


def _sort(frame: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    keys = ["ablation", "order", "variant", "seed", *extra, "run_dir"]
    return frame.sort_values(keys, na_position="last", kind="mergesort").reset_index(drop=True)


def frame_from_runs(collection: Collection, baseline: str | None = None) -> pd.DataFrame:
    """The tidy result frame of ``collection`` (see the module docstring); ``attrs['skipped']`` lists skips."""
    runs = collection.runs
    meta = _variant_meta(runs)
    baselines = resolve_variant_baselines(runs, baseline)
    rows: list[dict[str, Any]] = []
    for run in runs:
        label, order = meta[(run.ablation, run.variant)]
        for bench, metrics in run.results.items():
            for metric, value in metrics.items():
                rows.append({
                    "ablation": run.ablation, "variant": run.variant, "label": label, "seed": run.seed,
                    "run": run.name, "benchmark": bench, "metric": metric, "value": value, "order": order,
                    "key": f"{bench}/{metric}", "baseline": baselines[(run.ablation, run.variant)] or "",
                    "run_dir": str(run.path), **run.factors,
                })  # fmt: skip
    factor_cols = sorted({k for run in runs for k in run.factors})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA, *factor_cols])
    frame = frame.astype({"seed": "int64", "value": "float64", "order": "float64"})
    frame = _sort(frame, ["benchmark", "metric"])
    frame.attrs["skipped"] = [(s.path, s.reason) for s in collection.skipped]
    return frame


def collect(paths: Iterable[str | Path], *, baseline: str | None = None) -> pd.DataFrame:
    """Tidy frame of every result under ``paths`` (run folders, parents searched recursively, or globs).

    Raises:
        ReportError: when no run folder is found.
    """
    return frame_from_runs(load_runs(paths), baseline=baseline)


def factor_columns(frame: pd.DataFrame) -> list[str]:
    """The factor columns of a result frame (everything after the fixed columns)."""
    return [c for c in frame.columns if c not in (*COLUMNS, *EXTRA)]


# ------------------------------------------------------------------------------------------------- curves


def read_jsonl(path: Path, skipped: list[Skipped]) -> list[dict[str, Any]]:
    """The JSON-object lines of ``path``; bad lines are skipped and counted in one :class:`Skipped` entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        skipped.append(Skipped(str(path), f"unreadable: {err}"))
        return []
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        log.warning("skipping %d unreadable lines of %s", bad, path)
        skipped.append(Skipped(str(path), f"{bad} unreadable lines"))
    return records


def curves_from_runs(collection: Collection) -> pd.DataFrame:
    """Long frame of ``metrics.jsonl``: one row per (run, record, numeric field); empty when none exist."""
    meta = _variant_meta(collection.runs)
    rows: list[dict[str, Any]] = []
    for run in collection.runs:
        path = run.path / runfiles.METRICS
        if run.meta_source.startswith("frame:") or not path.is_file():  # a saved frame's curves: saved_curves
            continue
        label, order = meta[(run.ablation, run.variant)]
        head = {"ablation": run.ablation, "variant": run.variant, "label": label, "seed": run.seed,
                "run": run.name, "order": order, "run_dir": str(run.path)}  # fmt: skip
        for record in read_jsonl(path, collection.skipped):
            step = record.get("step")
            if not is_number(step):
                continue
            kind = str(record.get("kind", "train"))
            for key, value in record.items():
                if key not in ("kind", "step") and is_number(value):
                    rows.append({**head, "kind": kind, "step": int(step), "key": key, "value": float(value)})
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    frame = frame.astype({"seed": "int64", "step": "int64", "value": "float64", "order": "float64"})
    return _sort(frame, ["kind", "key", "step"])


def saved_curves(collection: Collection) -> pd.DataFrame:
    """The curves saved beside each ``frame.csv`` input (``curves.csv``, as a report writes them); empty if none."""
    parts = []
    for name in collection.inputs:
        path = Path(name).with_name("curves.csv")
        if name.endswith(".csv") and path.is_file():
            try:
                part = pd.read_csv(path)
            except (OSError, ValueError) as err:
                collection.skipped.append(Skipped(str(path), f"unreadable CSV: {err}"))
                continue
            if set(CURVE_COLUMNS) <= set(part.columns):
                parts.append(part[CURVE_COLUMNS])
            else:
                collection.skipped.append(Skipped(str(path), "not a curves table (columns differ)"))
    if not parts:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.astype({"seed": "int64", "step": "int64", "value": "float64", "order": "float64"})
    return _sort(frame, ["kind", "key", "step"])


def all_curves(collection: Collection) -> pd.DataFrame:
    """The curves of every run: ``metrics.jsonl`` of run folders and ``curves.csv`` beside saved frames."""
    read, saved = curves_from_runs(collection), saved_curves(collection)
    if saved.empty:
        return read
    if read.empty:
        return saved
    return _sort(pd.concat([read, saved], ignore_index=True), ["kind", "key", "step"])


def curves(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Columns ``ablation, variant, label, seed, run, order, kind, step, key, value, run_dir`` from metrics.jsonl."""
    return curves_from_runs(load_runs(paths))


# ------------------------------------------------------------------------------------------------ configs


def config_values(runs: Collection | Iterable[str | Path], keys: Sequence[str]) -> pd.DataFrame:
    """One row per run: ``ablation, variant, label, seed, run_dir`` and the dotted config ``keys`` (NaN if unset).

    ``runs`` is a :class:`Collection` or the paths to load one from.
    """
    collection = runs if isinstance(runs, Collection) else load_runs(runs)
    meta = _variant_meta(collection.runs)
    rows = []
    for run in collection.runs:
        label, order = meta[(run.ablation, run.variant)]
        row = {"ablation": run.ablation, "variant": run.variant, "label": label, "order": order,
               "seed": run.seed, "run_dir": str(run.path)}  # fmt: skip
        row.update({key: run.config.get(key, math.nan) for key in keys})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["ablation", "variant", "label", "order", "seed", "run_dir", *keys])
    return _sort(frame, [])
