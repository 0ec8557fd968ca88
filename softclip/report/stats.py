"""Seed statistics: mean ± std per variant, and the difference to the variant's baseline with its uncertainty.

Pure functions of numbers (numpy/scipy); :func:`summarize` applies them to a result frame.

* ``std`` uses ``ddof=1`` (NaN for one seed).
* Δ = mean(variant) − mean(baseline), where each variant has its own baseline (the frame's ``baseline`` column:
  the ablation's baseline, or with ``compare_within`` the variant matching it on those factors).
* When variant and baseline ran the same seeds (each once) the runs are *paired* by seed: the interval is a
  percentile bootstrap of the mean of the per-seed differences (seeds resampled with replacement), with a paired
  t-test (n ≥ 2) and a Wilcoxon signed-rank test (n ≥ 5). Otherwise the two groups are resampled independently
  (*unpaired*) and Welch's t-test is reported instead.
* Every comparison draws from its own ``numpy.random.default_rng(seed)``, so results do not depend on order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from softclip.registry import Registry

# Substrings of metric names whose smaller values are better; everything else is higher-is-better.
METRIC_DIRECTIONS: Registry[str] = Registry("report.metric_direction")
for _pattern in ("mean_rank", "median_rank", "loss"):
    METRIC_DIRECTIONS.register(_pattern)("lower")

SUMMARY_COLUMNS = [
    "ablation", "variant", "label", "order", "benchmark", "metric", "key", "n", "seeds", "mean", "std",
    "higher_is_better", "baseline", "delta", "ci_low", "ci_high", "pairing", "n_pairs", "p_ttest", "p_wilcoxon",
    "p_welch", "best",
]  # fmt: skip
MIN_WILCOXON = 5


def higher_is_better(metric: str) -> bool:
    """Direction of ``metric`` (a name or ``benchmark/name``) from :data:`METRIC_DIRECTIONS`."""
    return not any(p in metric for p in METRIC_DIRECTIONS.names() if METRIC_DIRECTIONS.get(p) == "lower")


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[int, float, float]:
    """(n, mean, std with ddof=1) of the finite values; std is NaN below two values, mean NaN for none."""
    x = _finite(values)
    if x.size == 0:
        return 0, math.nan, math.nan
    return int(x.size), float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Central ``level`` percentile interval of bootstrap ``samples`` (numpy's linear interpolation)."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_mean(values: Sequence[float] | np.ndarray, n_boot: int = 10000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of the mean of ``values`` [n]: resample them with replacement ``n_boot`` times.

    The resampling indices are ``default_rng(seed).integers(0, n, size=(n_boot, n))``.
    """
    d = np.asarray(values, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    return percentile_interval(d[idx].mean(axis=1), level)


def bootstrap_paired(diffs: Sequence[float] | np.ndarray, n_boot: int = 10000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """Interval of the mean paired difference: :func:`bootstrap_mean` of the per-seed differences ``diffs`` [n]."""
    return bootstrap_mean(diffs, n_boot, seed, level)


def bootstrap_unpaired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = 10000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of mean(a) − mean(b), resampling a [na] and b [nb] independently.

    Indices: ``rng.integers(0, na, (n_boot, na))`` then ``rng.integers(0, nb, (n_boot, nb))`` from one
    ``default_rng(seed)``.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, x.size, size=(n_boot, x.size))
    iy = rng.integers(0, y.size, size=(n_boot, y.size))
    return percentile_interval(x[ix].mean(axis=1) - y[iy].mean(axis=1), level)


def _pvalue(test, *args, **kwargs) -> float:
    """p-value of a scipy test, NaN where it is undefined (constant differences, too few values)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            p = float(test(*args, **kwargs).pvalue)
        except ValueError:
            return math.nan
    return p if math.isfinite(p) else math.nan


def compare(values: pd.Series, base: pd.Series, n_boot: int = 10000, seed: int = 0,
            level: float = 0.95) -> dict[str, float | str | int]:  # fmt: skip
    """Δ of ``values`` against ``base`` (both indexed by seed), its interval and p-values.

    Returns:
        ``delta, ci_low, ci_high, pairing ('paired'|'unpaired'|''), n_pairs, p_ttest, p_wilcoxon, p_welch``.
    """
    x, b = values[np.isfinite(values)], base[np.isfinite(base)]
    out: dict[str, float | str | int] = dict(delta=math.nan, ci_low=math.nan, ci_high=math.nan, pairing="",
                                             n_pairs=0, p_ttest=math.nan, p_wilcoxon=math.nan, p_welch=math.nan)  # fmt: skip
    if x.empty or b.empty:
        return out
    out["delta"] = float(x.mean() - b.mean())
    paired = x.index.is_unique and b.index.is_unique and set(x.index) == set(b.index)
    if paired:
        xs, bs = x.sort_index().to_numpy(float), b.sort_index().to_numpy(float)
        out["ci_low"], out["ci_high"] = bootstrap_paired(xs - bs, n_boot, seed, level)
        out.update(pairing="paired", n_pairs=int(xs.size))
        if xs.size >= 2:
            out["p_ttest"] = _pvalue(sps.ttest_rel, xs, bs)
        if xs.size >= MIN_WILCOXON:
            out["p_wilcoxon"] = _pvalue(sps.wilcoxon, xs - bs)
    else:
        out["ci_low"], out["ci_high"] = bootstrap_unpaired(x.to_numpy(float), b.to_numpy(float), n_boot, seed, level)
        out["pairing"] = "unpaired"
        if len(x) >= 2 and len(b) >= 2:
            out["p_welch"] = _pvalue(sps.ttest_ind, x.to_numpy(float), b.to_numpy(float), equal_var=False)
    return out


def variant_baselines(frame: pd.DataFrame) -> dict[tuple[str, str], str | None]:
    """The ``baseline`` column of a result frame per (ablation, variant): its most common non-empty value (ties by
    name), None where it has none or the frame has no such column."""
    out: dict[tuple[str, str], str | None] = {}
    for (ablation, variant), group in frame.groupby(["ablation", "variant"], sort=False):
        named = group["baseline"].dropna().astype(str) if "baseline" in group else pd.Series(dtype=str)
        ranked = sorted(named[named != ""].value_counts().items(), key=lambda kv: (-kv[1], kv[0]))
        out[(str(ablation), str(variant))] = ranked[0][0] if ranked else None
    return out


Baselines = Mapping[str, str | None] | Mapping[tuple[str, str], str | None]


def _baseline_lookup(frame: pd.DataFrame, baselines: Baselines | None) -> dict[tuple[str, str], str | None]:
    """(ablation, variant) -> baseline from the frame, or from ``{ablation: v}`` / ``{(ablation, variant): v}``."""
    if baselines is None:
        return variant_baselines(frame)
    given: dict = dict(baselines)
    pairs = frame[["ablation", "variant"]].drop_duplicates().itertuples(index=False)
    return {(a, v): given[(a, v)] if (a, v) in given else given.get(a) for a, v in pairs}


def mark_best(summary: pd.DataFrame) -> pd.Series:
    """True where a variant's mean is the best of its (ablation, key) by the metric's direction (ties all win)."""
    best = pd.Series(False, index=summary.index)
    for _, group in summary.groupby(["ablation", "key"], sort=False):
        means = group["mean"].astype(float)
        if means.notna().sum() < 1:
            continue
        target = means.max() if bool(group["higher_is_better"].iloc[0]) else means.min()
        best.loc[group.index] = np.isclose(means, target, rtol=1e-12, atol=1e-12) & means.notna()
    return best


def summarize(frame: pd.DataFrame, baselines: Baselines | None = None, *, n_boot: int = 10000, seed: int = 0,
              level: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Per (ablation, variant, metric): n, mean, std, and Δ/interval/p-values against the variant's baseline.

    A variant that is its own baseline (or has none, or whose baseline lacks the metric) gets no Δ.

    Args:
        frame: a result frame (:func:`softclip.report.frame.collect`).
        baselines: default: the frame's per-row ``baseline`` column (:func:`variant_baselines`). Else
            ``{ablation: variant}`` (one baseline for every variant of the ablation) and/or
            ``{(ablation, variant): baseline variant}``.
        n_boot: bootstrap resamples per comparison.
        seed: seed of each comparison's ``default_rng``.
        level: interval coverage.

    Returns:
        One row per (ablation, variant, key) with :data:`SUMMARY_COLUMNS`, in frame order.
    """
    chosen = _baseline_lookup(frame, baselines)
    series = {k: g.set_index("seed")["value"] for k, g in frame.groupby(["ablation", "variant", "key"], sort=False)}
    rows = []
    firsts = frame.drop_duplicates(["ablation", "variant", "key"])
    for rec in firsts.itertuples(index=False):
        values = series[(rec.ablation, rec.variant, rec.key)]
        n, mean, std = mean_std(values.to_numpy())
        base = chosen.get((rec.ablation, rec.variant))
        row = {"ablation": rec.ablation, "variant": rec.variant, "label": rec.label, "order": rec.order,
               "benchmark": rec.benchmark, "metric": rec.metric, "key": rec.key, "n": n,
               "seeds": ",".join(str(s) for s in sorted(set(values.index))), "mean": mean, "std": std,
               "higher_is_better": higher_is_better(rec.metric), "baseline": base or ""}  # fmt: skip
        base_values = series.get((rec.ablation, base, rec.key)) if base else None
        if base_values is not None and rec.variant != base:
            row.update(compare(values, base_values, n_boot=n_boot, seed=seed, level=level))
        else:
            row.update(compare(values.iloc[:0], values.iloc[:0]))
        rows.append(row)
    summary = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c != "best"])
    summary = summary.sort_values(["ablation", "order", "variant", "benchmark", "metric"], na_position="last",
                                  kind="mergesort").reset_index(drop=True)  # fmt: skip
    summary["best"] = mark_best(summary) if len(summary) else pd.Series(dtype=bool)
    return summary
