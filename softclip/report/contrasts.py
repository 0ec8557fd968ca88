"""Comparisons beyond "each variant vs its baseline": declared ``A:B`` contrasts and interactions.

An **interaction** is a paired difference of differences, (V − B) − (V0 − R), on the seeds all four variants
share with a finite value, with its Student-t interval and one-sample t-test p. Two shapes are found from the
frame's factor columns and baselines:

* ``compare_within`` ablations (rows with different baselines): R is the reference baseline (the lowest-ordered
  variant that is some variant's baseline); for a variant V whose baseline B differs from R on factors D, V0 is
  the variant equal to V on every other factor and to R on D (noise: (SoftCLIP − CLIP) at 0.6 minus the same at
  0.0). Only where B(V0) = R.
* 2×2 factorials: two factors with two levels each, every cell one variant: (f1g1 − f0g1) − (f1g0 − f0g0), the
  reference levels those of the lowest-ordered cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps

from softclip.metric_catalog import load_catalog
from softclip.report.frame import factor_columns
from softclip.report.multiplicity import Families
from softclip.report.stats import MIN_PAIRS, _pvalue, compare, higher_is_better, t_interval

INTERACTION_COLUMNS = ["ablation", "kind", "effect", "variant", "baseline", "ref_variant", "ref_baseline", "key",
                       "higher_is_better", "delta", "ci_low", "ci_high", "n_pairs", "sd_diff", "p", "seeds"]  # fmt: skip


def diff_of_diffs(v: pd.Series, b: pd.Series, v0: pd.Series, r: pd.Series) -> tuple[np.ndarray, list]:
    """Per-seed (v − b) − (v0 − r) [n] on the seeds all four have once with a finite value, and those seeds."""
    sides = [s[np.isfinite(s.to_numpy(float))] for s in (v, b, v0, r)]
    if not all(s.index.is_unique for s in sides):
        return np.array([]), []
    common = sorted(set.intersection(*(set(s.index) for s in sides)))
    x = [s.loc[common].to_numpy(float) for s in sides]
    return (x[0] - x[1]) - (x[2] - x[3]), common


def _levels(frame: pd.DataFrame, ablation: str) -> tuple[pd.DataFrame, dict[str, str], dict[str, str]]:
    """(variant -> factor values table, variant -> baseline, variant -> label) for one ablation, in order."""
    part = frame[frame["ablation"] == ablation].drop_duplicates("variant")
    cols = [c for c in factor_columns(frame) if part[c].notna().any()]
    table = part.set_index("variant")[cols]
    base = {v: (b if isinstance(b, str) and b else v) for v, b in zip(part["variant"], part["baseline"], strict=True)}
    return table, base, dict(zip(part["variant"], part["label"], strict=True))


def _same(a: pd.Series, b: pd.Series) -> bool:
    return all((pd.isna(x) and pd.isna(y)) or x == y for x, y in zip(a, b, strict=True))


def within_quads(table: pd.DataFrame, base: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """(V, B, V0, R) quads of a ``compare_within`` ablation (see the module docstring)."""
    own = [v for v in table.index if base[v] == v and v in set(base.values())]
    if len(set(base.values())) < 2 or not own:
        return []
    ref = own[0]
    quads = []
    for v in table.index:
        b = base[v]
        if b in (v, ref):
            continue
        differ = [c for c in table.columns if not _same(table.loc[[b], c], table.loc[[ref], c])]
        want = table.loc[v].copy()
        want[differ] = table.loc[ref, differ]
        match = [u for u in table.index if _same(table.loc[u], want)]
        if len(match) == 1 and match[0] != ref and base[match[0]] == ref:
            quads.append((v, b, match[0], ref))
    return quads


def factorial_quads(table: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(f1g1, f0g1, f1g0, f0g0) for each pair of two-level factors whose 4 cells are one variant each."""
    quads = []
    cols = list(table.columns)
    for i, f in enumerate(cols):
        for g in cols[i + 1:]:
            cells = table[[f, g]].dropna()
            if cells[f].nunique() != 2 or cells[g].nunique() != 2 or len(cells) != 4 or cells.duplicated().any():
                continue
            f0, g0 = cells.iloc[0]
            f1 = next(x for x in cells[f] if x != f0)
            g1 = next(x for x in cells[g] if x != g0)
            at = {(a, b): v for v, (a, b) in zip(cells.index, cells.itertuples(index=False), strict=True)}
            quads.append((at[(f1, g1)], at[(f0, g1)], at[(f1, g0)], at[(f0, g0)]))
    return quads


def interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Every interaction of every ablation, per metric key (:data:`INTERACTION_COLUMNS`)."""
    rows = []
    series = {k: g.set_index("seed")["value"] for k, g in frame.groupby(["ablation", "variant", "key"], sort=False)}
    for ablation in sorted(frame["ablation"].unique()):
        table, base, labels = _levels(frame, ablation)
        if table.empty:
            continue
        quads = within_quads(table, base) or factorial_quads(table)
        keys = list(dict.fromkeys(frame.loc[frame["ablation"] == ablation, "key"]))
        for v, b, v0, r in quads:
            effect = f"({labels[v]} − {labels[b]}) − ({labels[v0]} − {labels[r]})"
            for key in keys:
                parts = [series.get((ablation, x, key)) for x in (v, b, v0, r)]
                if any(p is None for p in parts):
                    continue
                d, seeds = diff_of_diffs(*parts)
                row = {"ablation": ablation, "kind": "interaction", "effect": effect, "variant": v, "baseline": b,
                       "ref_variant": v0, "ref_baseline": r, "key": key, "higher_is_better": higher_is_better(key),
                       "delta": float(d.mean()) if d.size else math.nan, "ci_low": math.nan, "ci_high": math.nan,
                       "n_pairs": int(d.size), "sd_diff": math.nan, "p": math.nan,
                       "seeds": ",".join(map(str, seeds))}  # fmt: skip
                if d.size >= MIN_PAIRS:
                    row["ci_low"], row["ci_high"] = t_interval(d)
                    row["sd_diff"] = float(d.std(ddof=1))
                    if row["sd_diff"] > 0:
                        row["p"] = _pvalue(sps.ttest_1samp, d, 0.0)
                rows.append(row)
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS)


def declared_contrasts(frame: pd.DataFrame, families: Families, n_boot: int = 10000) -> pd.DataFrame:
    """The primary ``A:B`` contrasts that are not a variant-vs-its-baseline row already, one row per metric key of
    the family (the summary's comparison columns, ``kind`` = contrast)."""
    rows = []
    series = {k: g.set_index("seed")["value"] for k, g in frame.groupby(["ablation", "variant", "key"], sort=False)}
    for ablation, fam in families.items():
        part = frame[frame["ablation"] == ablation].drop_duplicates("variant")
        base = dict(zip(part["variant"], part["baseline"], strict=True))
        labels = dict(zip(part["variant"], part["label"], strict=True))
        for v, ref in fam.pairs:
            if base.get(v) == ref:
                continue
            for key in fam.metrics:
                x, y = series.get((ablation, v, key)), series.get((ablation, ref, key))
                if x is None or y is None:
                    continue
                info = load_catalog().info(key)
                cmp = compare(x, y, higher=higher_is_better(key), n_boot=n_boot, margin=info.margin,
                              pilot_sd=info.pilot_sd)  # fmt: skip
                rows.append({"ablation": ablation, "variant": v, "label": labels.get(v, v), "baseline": ref,
                             "vs": labels.get(ref, ref), "kind": "contrast", "key": key,
                             "higher_is_better": higher_is_better(key), **cmp})  # fmt: skip
    return pd.DataFrame(rows)
