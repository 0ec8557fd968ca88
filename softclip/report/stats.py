"""Seed statistics: mean ± std per variant, Δ to the variant's baseline with its interval, power, the best.

Pure functions of numbers (numpy/scipy); :func:`summarize` applies them to a result frame.

* ``std`` uses ``ddof=1`` (NaN for one seed).
* Each variant has its own baseline (the frame's ``baseline`` column: the ablation's baseline, or with
  ``compare_within`` the variant matching it on those factors).
* **Paired** (the variant and its baseline share seeds): the runs are matched on the seeds both sides have with a
  finite value; Δ is the mean of those per-seed differences d, its interval the Student-t interval
  ``mean(d) ± t(0.975, n−1)·sd(d)/√n``, p the paired t-test (and Wilcoxon's signed-rank test for n ≥ 5). Seeds
  only one side has are left out and counted (``n_unmatched``). A percentile bootstrap of mean(d) is kept as
  an extra column (``boot_low``/``boot_high``), never as the headline: at 5 seeds it covers a true Δ = 0 only
  ~85% of the time.
* **Unpaired** (no seed in common): Welch's interval and Welch's t-test on the two groups' finite values.
* Below 2 pairs (2 per side when unpaired) there is no interval and no p: the finding is ``n too small``.
* **Verdicts** come from the *adjusted* p (:mod:`~softclip.report.multiplicity`: Holm within the ablation's
  primary family, BH over the rest): ``better``/``worse`` when p_adj < 0.05 (by the metric's direction);
  else ``equivalent`` when the TOST against the metric's declared margin ±m (``softclip/metrics.yaml``) has
  p < 0.05, i.e. the 90% paired t-interval lies inside ±m; else ``inconclusive``.
* **Planning**: ``mde`` is the smallest true |Δ| a two-sided paired test at α = 0.05 detects with power 0.8 at
  this pair count, from the metric's declared *pilot* sd (``pilot_sd`` in ``softclip/metrics.yaml``, from the
  power study), never from these seeds; ``sd_diff`` is the observed std of the paired differences.
* **Best**: per (ablation, metric), the variant with the best mean, only where its comparison against the
  runner-up (the same paired rule) holds after BH over all such comparisons; otherwise no variant is best.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from softclip.metric_catalog import load_catalog
from softclip.registry import Registry
from softclip.report.multiplicity import Families, bh, correct

# Substrings of metric names whose smaller values are better; everything else is higher-is-better.
METRIC_DIRECTIONS: Registry[str] = Registry("report.metric_direction")
for _pattern in ("mean_rank", "median_rank", "loss"):
    METRIC_DIRECTIONS.register(_pattern)("lower")

SUMMARY_COLUMNS = [
    "ablation", "variant", "label", "order", "benchmark", "metric", "key", "n", "seeds", "mean", "std",
    "higher_is_better", "baseline", "kind", "delta", "ci_low", "ci_high", "pairing", "n_pairs", "n_unmatched",
    "sd_diff", "mde", "finding", "p", "family", "p_adj", "margin", "ci90_low", "ci90_high", "p_tost", "p_ttest",
    "p_wilcoxon", "p_welch", "boot_low", "boot_high", "best",
]  # fmt: skip
COMPARE_KEYS = SUMMARY_COLUMNS[SUMMARY_COLUMNS.index("delta"):SUMMARY_COLUMNS.index("best")]
MIN_WILCOXON = 5
MIN_PAIRS = 2
ALPHA = 0.05
POWER = 0.8

# What a comparison supports, in the order they are decided.
N_TOO_SMALL = "n too small"
BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
NOT_COUNTED = "not counted"
FINDINGS = (N_TOO_SMALL, BETTER, WORSE, EQUIVALENT, INCONCLUSIVE, NOT_COUNTED)


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


# ---------------------------------------------------------------------------------------------- intervals


def t_half_width(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width t((1+level)/2, n−1)·sd/√n of the Student-t interval of a mean of ``n`` values with std ``sd``."""
    return float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def t_interval(diffs: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``diffs`` [n]: mean ± :func:`t_half_width`; NaNs below 2 values."""
    d = np.asarray(diffs, dtype=float)
    if d.size < MIN_PAIRS:
        return math.nan, math.nan
    half = t_half_width(float(d.std(ddof=1)), d.size, level)
    return float(d.mean()) - half, float(d.mean()) + half


def welch_df(a: np.ndarray, b: np.ndarray) -> float:
    """Welch–Satterthwaite degrees of freedom of mean(a) − mean(b) (each side ≥ 2 values)."""
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return float(a.size + b.size - 2)
    return float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))


def welch_interval(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                   level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """Welch's interval of mean(a) − mean(b) for a [na], b [nb]; NaNs unless both sides have ≥ 2 values."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < MIN_PAIRS or y.size < MIN_PAIRS:
        return math.nan, math.nan
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    half = float(sps.t.ppf(0.5 + level / 2, welch_df(x, y))) * se
    delta = float(x.mean() - y.mean())
    return delta - half, delta + half


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


# -------------------------------------------------------------------------------------------------- power


def t_test_power(effect_in_se: float, df: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test at level ``alpha`` with ``df`` degrees of freedom when the true effect is
    ``effect_in_se`` standard errors (the noncentrality)."""
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    upper = float(sps.nct.sf(crit, df, effect_in_se))
    lower = float(sps.nct.cdf(-crit, df, effect_in_se))  # scipy returns NaN where this tail underflows
    return upper + (lower if math.isfinite(lower) else 0.0)


def mde_in_se(df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true effect, in standard errors, that a two-sided t-test with ``df`` degrees of freedom detects with
    probability ``power`` (solves :func:`t_test_power` = power; ≈ 2.80 + 0.94 at large df)."""
    return float(optimize.brentq(lambda nc: t_test_power(nc, df, alpha) - power, 1e-6, 200.0, xtol=1e-10))


def mde_paired(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean paired difference at ``n`` pairs whose differences have std ``sd_diff``."""
    if n < MIN_PAIRS or not math.isfinite(sd_diff):
        return math.nan
    return mde_in_se(n - 1, alpha, power) * sd_diff / math.sqrt(n)


# ------------------------------------------------------------------------------------------- comparisons


def _pvalue(test, *args, **kwargs) -> float:
    """p-value of a scipy test, NaN where it is undefined (constant differences, too few values)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            p = float(test(*args, **kwargs).pvalue)
        except ValueError:
            return math.nan
    return p if math.isfinite(p) else math.nan


def tost(diffs: Sequence[float] | np.ndarray, margin: float, alpha: float = ALPHA) -> tuple[float, float, float]:
    """Two one-sided paired t-tests of |mean(d)| < ``margin`` for differences d [n].

    Returns (p, low, high): p = max of the one-sided p-values of H0 mean ≤ −m and H0 mean ≥ +m (equivalence at
    level α iff p < α, iff the (1 − 2α) t-interval (low, high) lies inside ±m); NaNs below 2 values or without a
    margin. Constant differences have a zero-width interval: p is 0 inside the margin, 1 outside.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < MIN_PAIRS or not (math.isfinite(margin) and margin > 0):
        return math.nan, math.nan, math.nan
    mean, se, df = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1
    low, high = t_interval(d, 1 - 2 * alpha)
    if se == 0:
        return (0.0 if abs(mean) < margin else 1.0), low, high
    p_low = float(sps.t.sf((mean + margin) / se, df))   # H0: mean <= -m
    p_high = float(sps.t.cdf((mean - margin) / se, df))  # H0: mean >= +m
    return max(p_low, p_high), low, high


def finding(delta: float, has_interval: bool, p_adj: float, p_tost: float, higher: bool,
            alpha: float = ALPHA) -> str:  # fmt: skip
    """What a comparison supports (one of :data:`FINDINGS`), from the *adjusted* p only: ``n too small`` without
    an interval; ``better``/``worse`` (by the metric's direction) when p_adj < α; ``equivalent`` when the TOST
    p < α; else ``inconclusive``."""
    if not has_interval:
        return N_TOO_SMALL
    if math.isfinite(p_adj) and p_adj < alpha:
        return BETTER if (delta > 0) == higher else WORSE
    if math.isfinite(p_tost) and p_tost < alpha:
        return EQUIVALENT
    return INCONCLUSIVE


def decide(table: pd.DataFrame, alpha: float = ALPHA) -> pd.Series:
    """:func:`finding` for each row of a corrected comparison table (``family`` "not counted": no verdict)."""
    out = []
    for r in table.to_dict("records"):
        if not math.isfinite(r.get("delta", math.nan)):
            out.append("")
        elif r.get("family") == "not counted":
            out.append(NOT_COUNTED)
        else:
            out.append(finding(r["delta"], math.isfinite(r.get("ci_low", math.nan)), r.get("p_adj", math.nan),
                               r.get("p_tost", math.nan), bool(r.get("higher_is_better", True)), alpha))  # fmt: skip
    return pd.Series(out, index=table.index, dtype=object)


def paired_seeds(values: pd.Series, base: pd.Series) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(x [n], b [n], n_unmatched): both sides on the seeds that each has once with a finite value, sorted by
    seed; None when the sides share no such seed (or a side repeats a seed), so they cannot be paired."""
    if not (values.index.is_unique and base.index.is_unique):
        return None
    x, b = values[np.isfinite(values.to_numpy(float))], base[np.isfinite(base.to_numpy(float))]
    common = sorted(set(x.index) & set(b.index))
    if not common:
        return None
    unmatched = len(set(x.index) ^ set(b.index))
    return x.loc[common].to_numpy(float), b.loc[common].to_numpy(float), unmatched


def empty_comparison() -> dict[str, float | str | int]:
    """A comparison row with nothing compared (a baseline row, or a variant without a baseline)."""
    out: dict[str, float | str | int] = dict.fromkeys(COMPARE_KEYS, math.nan)
    out.update(pairing="", n_pairs=0, n_unmatched=0, finding="", family="")
    return out


def compare(values: pd.Series, base: pd.Series, *, higher: bool = True, n_boot: int = 10000, seed: int = 0,
            level: float = 0.95, margin: float = math.nan, pilot_sd: float = math.nan) -> dict[str, float | str | int]:  # fmt: skip
    """Δ of ``values`` against ``base`` (both indexed by seed), its interval, p-values, TOST and planning MDE.

    Args:
        margin: the metric's margin of practical equivalence (NaN: no TOST).
        pilot_sd: the planning sd of a paired difference (NaN: no MDE); never these seeds' sd.

    Returns:
        The :data:`COMPARE_KEYS`: ``delta, ci_low, ci_high, pairing ('paired'|'unpaired'|''), n_pairs,
        n_unmatched, sd_diff, mde, finding, p (the test's raw p), family, p_adj, margin, ci90_low, ci90_high,
        p_tost, p_ttest, p_wilcoxon, p_welch, boot_low, boot_high``. ``finding`` here is from the *raw* p (one
        comparison alone); a report replaces it after :func:`~softclip.report.multiplicity.correct`.
    """
    out = empty_comparison()
    out["margin"] = margin
    matched = paired_seeds(values, base)
    if matched is not None:
        xs, bs, unmatched = matched
        d = xs - bs
        out.update(pairing="paired", n_pairs=int(d.size), n_unmatched=unmatched, delta=float(d.mean()))
        if d.size >= MIN_PAIRS:
            out["ci_low"], out["ci_high"] = t_interval(d, level)
            out["sd_diff"] = float(d.std(ddof=1))
            out["mde"] = mde_paired(pilot_sd, d.size, 1 - level)
            out["boot_low"], out["boot_high"] = bootstrap_paired(d, n_boot, seed, level)
            out["p_tost"], out["ci90_low"], out["ci90_high"] = tost(d, margin, (1 - level))
            if out["sd_diff"] > 0:  # constant differences: t is infinite and p undefined, not 0
                out["p_ttest"] = out["p"] = _pvalue(sps.ttest_rel, xs, bs)
        if d.size >= MIN_WILCOXON:
            out["p_wilcoxon"] = _pvalue(sps.wilcoxon, d)
    else:
        x, b = _finite(values.to_numpy(float)), _finite(base.to_numpy(float))
        if x.size == 0 or b.size == 0:
            return out
        out.update(pairing="unpaired", n_pairs=0, n_unmatched=int(x.size + b.size), delta=float(x.mean() - b.mean()))
        if x.size >= MIN_PAIRS and b.size >= MIN_PAIRS:
            out["ci_low"], out["ci_high"] = welch_interval(x, b, level)
            if math.isfinite(pilot_sd):  # planning: the pilot's per-run sd is pilot_sd/√2
                se = pilot_sd * math.sqrt((1 / x.size + 1 / b.size) / 2)
                out["mde"] = mde_in_se(x.size + b.size - 2, 1 - level) * se
            out["boot_low"], out["boot_high"] = bootstrap_unpaired(x, b, n_boot, seed, level)
            out["p_welch"] = out["p"] = _pvalue(sps.ttest_ind, x, b, equal_var=False)
    out["finding"] = finding(out["delta"], math.isfinite(out["ci_low"]), out["p"], out["p_tost"], higher, 1 - level)
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


def mark_best(summary: pd.DataFrame, series: Mapping[tuple[str, str, str], pd.Series],
              level: float = 0.95) -> pd.Series:  # fmt: skip
    """True for the variant with the best mean of its (ablation, key) by the metric's direction, only where its
    comparison against the runner-up (paired on shared seeds, else Welch's) holds after Benjamini–Hochberg over
    every such leader-vs-runner-up comparison of the summary; ties and ``n too small`` mark nothing."""
    best = pd.Series(False, index=summary.index)
    duels: list[tuple[object, float]] = []
    for (ablation, key), group in summary.groupby(["ablation", "key"], sort=False):
        ranked = group[group["mean"].notna()]
        if len(ranked) < 2:
            continue
        higher = bool(ranked["higher_is_better"].iloc[0])
        ranked = ranked.sort_values("mean", ascending=not higher, kind="mergesort")
        first, second = ranked.iloc[0], ranked.iloc[1]
        duel = compare(series[(ablation, first["variant"], key)], series[(ablation, second["variant"], key)],
                       higher=higher, n_boot=1, level=level)  # fmt: skip
        if math.isfinite(duel["ci_low"]) and math.isfinite(duel["p"]) and (duel["delta"] > 0) == higher:
            duels.append((ranked.index[0], float(duel["p"])))
    if duels:
        adjusted = bh([p for _, p in duels])
        for (index, _), p_adj in zip(duels, adjusted, strict=True):
            best.loc[index] = bool(p_adj < 1 - level)
    return best


def summarize(frame: pd.DataFrame, baselines: Baselines | None = None, *, n_boot: int = 10000, seed: int = 0,
              level: float = 0.95, families: Families | None = None, adjust: bool = True) -> pd.DataFrame:  # fmt: skip
    """Per (ablation, variant, metric): n, mean, std, and Δ/interval/power/p against the variant's baseline.

    A variant that is its own baseline (or has none, or whose baseline lacks the metric) gets no Δ.

    Args:
        frame: a result frame (:func:`softclip.report.frame.collect`); one row per (run, metric), so the same
            (ablation, variant, seed) twice is unpaired data (the report refuses such inputs earlier).
        baselines: default: the frame's per-row ``baseline`` column (:func:`variant_baselines`). Else
            ``{ablation: variant}`` (one baseline for every variant of the ablation) and/or
            ``{(ablation, variant): baseline variant}``.
        n_boot: bootstrap resamples per comparison (the extra ``boot_*`` columns).
        seed: seed of each comparison's ``default_rng``.
        level: interval coverage (α = 1 − level for the tests and the MDE).
        families: each ablation's primary family (Holm); every other comparison is in the BH family.
        adjust: correct here (False: the caller corrects this table together with others, then :func:`decide`).

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
        higher = higher_is_better(rec.metric)
        row = {"ablation": rec.ablation, "variant": rec.variant, "label": rec.label, "order": rec.order,
               "benchmark": rec.benchmark, "metric": rec.metric, "key": rec.key, "n": n,
               "seeds": ",".join(str(s) for s in sorted(set(values.index))), "mean": mean, "std": std,
               "higher_is_better": higher, "baseline": base or ""}  # fmt: skip
        base_values = series.get((rec.ablation, base, rec.key)) if base else None
        if base_values is not None and rec.variant != base:
            info = load_catalog().info(rec.key)
            row.update(compare(values, base_values, higher=higher, n_boot=n_boot, seed=seed, level=level,
                               margin=info.margin, pilot_sd=info.pilot_sd))  # fmt: skip
        else:
            row.update(empty_comparison())
        rows.append(row)
    summary = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c != "best"])
    summary = summary.sort_values(["ablation", "order", "variant", "benchmark", "metric"], na_position="last",
                                  kind="mergesort").reset_index(drop=True)  # fmt: skip
    summary["kind"] = "contrast"
    summary["best"] = mark_best(summary, series, level) if len(summary) else pd.Series(dtype=bool)
    if adjust:
        (summary,) = correct([summary], families or {})
        summary["finding"] = decide(summary, 1 - level)
    return summary
