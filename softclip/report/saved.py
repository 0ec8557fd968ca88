"""Report inputs other than run folders: a saved result frame (``frame.csv`` with ``configs.csv`` beside it), and
the rule that each (ablation, variant, seed) counts once (byte-identical copies once, with a note; different runs
claiming the same seed are an error)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from softclip import runfiles
from softclip.report.runs import ReportError, Run, as_order

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
            seed=int(head["seed"]), name=str(head["run"]), order=as_order(head["order"]),
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
