"""Seed statistics against references computed here by brute force, loops and scipy."""

from __future__ import annotations

import itertools
import math
import statistics
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from softclip.report.stats import (
    METRIC_DIRECTIONS,
    bootstrap_paired,
    bootstrap_unpaired,
    compare,
    finding,
    higher_is_better,
    mde_in_se,
    mde_paired,
    mean_std,
    summarize,
    t_interval,
    t_test_power,
)


def test_mean_std_matches_statistics_module() -> None:
    values = [3.0, 7.5, 1.25, 9.0]
    n, mean, std = mean_std(values)
    assert n == 4
    assert mean == pytest.approx(statistics.fmean(values))
    assert std == pytest.approx(statistics.stdev(values))  # ddof = 1


def test_mean_std_one_value_and_nan() -> None:
    assert mean_std([4.0])[0] == 1 and mean_std([4.0])[1] == 4.0 and math.isnan(mean_std([4.0])[2])
    n, mean, _ = mean_std([1.0, float("nan"), 3.0])
    assert (n, mean) == (2, 2.0)
    assert mean_std([])[0] == 0 and math.isnan(mean_std([])[1])


@pytest.mark.parametrize(("metric", "higher"), [
    ("top1", True), ("retrieval/rsum", True), ("i2t_mean_rank", False), ("t2i_median_rank", False),
    ("val_nce_loss", False), ("retrieval/val_nce_loss", False), ("map_hard", True),
])  # fmt: skip
def test_metric_direction(metric: str, higher: bool) -> None:
    assert higher_is_better(metric) is higher
    assert set(METRIC_DIRECTIONS.names()) == {"loss", "mean_rank", "median_rank"}


def _loop_paired(d: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The documented resampling, one bootstrap replicate at a time."""
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = [sum(d[i] for i in row) / len(row) for row in idx]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def test_bootstrap_paired_matches_loop_reference() -> None:
    d = np.array([0.4, -1.2, 2.5, 0.9, 1.1])
    assert bootstrap_paired(d, n_boot=2000, seed=3) == pytest.approx(_loop_paired(d, 2000, 3), abs=1e-12)
    assert bootstrap_paired(d, n_boot=2000, seed=3) == bootstrap_paired(d, n_boot=2000, seed=3)
    assert bootstrap_paired(d, n_boot=2000, seed=4) != bootstrap_paired(d, n_boot=2000, seed=3)


def test_bootstrap_paired_converges_to_exact_bootstrap_distribution() -> None:
    d = np.array([0.0, 1.0, 3.0, 7.0])
    exact = [float(np.mean(d[list(c)])) for c in itertools.product(range(4), repeat=4)]  # all 256 resamples
    lo, hi = np.percentile(exact, [2.5, 97.5])
    got = bootstrap_paired(d, n_boot=100_000, seed=0)
    assert got[0] == pytest.approx(lo, abs=0.25) and got[1] == pytest.approx(hi, abs=0.25)  # one grid step
    assert got[0] < d.mean() < got[1]


def test_bootstrap_unpaired_matches_loop_and_brute_force() -> None:
    a, b = np.array([5.0, 9.0]), np.array([1.0, 2.0, 6.0])
    rng = np.random.default_rng(7)
    ia, ib = rng.integers(0, 2, size=(3000, 2)), rng.integers(0, 3, size=(3000, 3))
    ref = np.percentile([a[i].mean() - b[j].mean() for i, j in zip(ia, ib, strict=True)], [2.5, 97.5])
    assert bootstrap_unpaired(a, b, n_boot=3000, seed=7) == pytest.approx(tuple(ref), abs=1e-12)
    exact = [a[list(i)].mean() - b[list(j)].mean()
             for i in itertools.product(range(2), repeat=2) for j in itertools.product(range(3), repeat=3)]  # fmt: skip
    lo, hi = np.percentile(exact, [2.5, 97.5])
    got = bootstrap_unpaired(a, b, n_boot=100_000, seed=0)
    assert got[0] == pytest.approx(lo, abs=0.5) and got[1] == pytest.approx(hi, abs=0.5)


def test_compare_paired_by_seed() -> None:
    x = pd.Series([10.0, 12.0, 11.0, 15.0, 13.0], index=[4, 0, 1, 2, 3])  # order differs from the baseline's
    b = pd.Series([9.0, 9.5, 11.5, 10.0, 12.5], index=[0, 1, 2, 3, 4])
    out = compare(x, b, n_boot=5000, seed=0)
    xs, bs = x.sort_index().to_numpy(), b.sort_index().to_numpy()
    assert out["pairing"] == "paired" and out["n_pairs"] == 5 and out["n_unmatched"] == 0
    assert out["delta"] == pytest.approx(xs.mean() - bs.mean())
    ref = sps.ttest_rel(xs, bs)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert (out["boot_low"], out["boot_high"]) == pytest.approx(_loop_paired(xs - bs, 5000, 0))
    assert out["p_ttest"] == pytest.approx(ref.pvalue)
    assert out["p_wilcoxon"] == pytest.approx(sps.wilcoxon(xs - bs).pvalue)
    assert out["sd_diff"] == pytest.approx(statistics.stdev(xs - bs))
    assert math.isnan(out["p_welch"])


def test_t_interval_by_hand() -> None:
    d = [0.5, -0.25, 1.75, 1.0]
    half = sps.t.ppf(0.975, 3) * statistics.stdev(d) / math.sqrt(4)
    assert t_interval(d) == pytest.approx((statistics.fmean(d) - half, statistics.fmean(d) + half))
    assert all(math.isnan(v) for v in t_interval([1.0]))


def test_compare_one_seed_is_n_too_small() -> None:
    one = compare(pd.Series([3.0], index=[0]), pd.Series([1.0], index=[0]), n_boot=100)
    assert (one["pairing"], one["n_pairs"], one["delta"], one["finding"]) == ("paired", 1, 2.0, "n too small")
    for key in ("ci_low", "ci_high", "p_ttest", "sd_diff", "mde", "boot_low", "boot_high"):
        assert math.isnan(one[key]), key  # never a zero-width interval [Δ, Δ]


def test_compare_small_and_degenerate() -> None:
    two = compare(pd.Series([2.0, 4.0], index=[0, 1]), pd.Series([1.0, 1.0], index=[0, 1]), n_boot=100)
    assert not math.isnan(two["p_ttest"]) and math.isnan(two["p_wilcoxon"])  # Wilcoxon needs n >= 5
    same = compare(pd.Series([1.0, 2.0], index=[0, 1]), pd.Series([0.0, 1.0], index=[0, 1]), n_boot=100)
    assert same["delta"] == 1.0 and same["sd_diff"] == 0.0 and (same["ci_low"], same["ci_high"]) == (1.0, 1.0)
    assert math.isnan(same["p_ttest"])  # constant differences: t is infinite, p undefined (scipy says 0)
    zero = compare(pd.Series([1.0, 2.0] * 3, index=range(6)), pd.Series([1.0, 2.0] * 3, index=range(6)), n_boot=10)
    assert zero["delta"] == 0.0 and math.isnan(zero["p_ttest"]) and zero["finding"] == "inconclusive"  # no margin
    within = compare(pd.Series([1.0, 2.0] * 3, index=range(6)), pd.Series([1.0, 2.0] * 3, index=range(6)),
                     n_boot=10, margin=0.5)  # fmt: skip
    assert within["p_tost"] == 0.0 and within["finding"] == "equivalent"  # a zero-width interval inside ±0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sps.wilcoxon(np.zeros(6)).pvalue
    assert zero["p_wilcoxon"] == pytest.approx(ref, nan_ok=True)


def test_compare_nan_seed_pairs_on_the_common_seeds() -> None:
    rng = np.random.default_rng(5)
    b = pd.Series(rng.normal(50, 5, 5), index=range(5))
    x = b + 2.0 + pd.Series(rng.normal(0, 0.3, 5), index=range(5))
    x.iloc[2] = np.nan  # seed 2 failed
    out = compare(x, b, n_boot=100)
    keep = [0, 1, 3, 4]
    ref = sps.ttest_rel(x.loc[keep], b.loc[keep])
    assert (out["pairing"], out["n_pairs"], out["n_unmatched"]) == ("paired", 4, 1)
    assert out["delta"] == pytest.approx(float((x.loc[keep] - b.loc[keep]).mean()))  # no unmatched baseline seed
    assert out["p_ttest"] == pytest.approx(ref.pvalue) and out["p_ttest"] < 0.01
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert math.isnan(out["p_welch"]) and out["finding"] == "better"


def test_compare_unequal_seed_sets_pair_on_the_intersection() -> None:
    x = pd.Series([10.0, 12.0, 14.0, 13.0], index=[0, 1, 2, 3])
    b = pd.Series([9.0, 10.5, 12.0, 11.0, 30.0], index=[0, 1, 2, 3, 9])
    out = compare(x, b, n_boot=100)
    assert (out["pairing"], out["n_pairs"], out["n_unmatched"]) == ("paired", 4, 1)
    assert out["delta"] == pytest.approx(np.mean([1.0, 1.5, 2.0, 2.0]))


def test_compare_unpaired_when_no_seed_is_shared() -> None:
    x = pd.Series([10.0, 12.0, 14.0], index=[0, 1, 2])
    b = pd.Series([9.0, 10.0], index=[5, 6])
    out = compare(x, b, n_boot=4000, seed=1)
    assert out["pairing"] == "unpaired" and out["n_pairs"] == 0
    assert out["delta"] == pytest.approx(12.0 - 9.5)
    assert math.isnan(out["p_ttest"])
    ref = sps.ttest_ind(x.to_numpy(), b.to_numpy(), equal_var=False)
    assert out["p_welch"] == pytest.approx(ref.pvalue)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert (out["boot_low"], out["boot_high"]) == pytest.approx(bootstrap_unpaired(x, b, n_boot=4000, seed=1))
    lone = compare(x, pd.Series([9.0], index=[7]), n_boot=10)
    assert lone["finding"] == "n too small" and math.isnan(lone["ci_low"]) and math.isnan(lone["p_welch"])


def test_paired_interval_coverage_and_mde_power_by_simulation() -> None:
    """At 5 seeds the Student-t interval covers a true Δ = 0 in ~95% of draws, and a true Δ equal to the MDE
    computed from the true std of the differences is detected (p < 0.05) in ~80% of draws."""
    rng = np.random.default_rng(20261202)
    n, sd, draws = 5, 1.7, 600
    seeds = range(n)
    mde = mde_paired(sd, n)
    covered = detected = 0
    for _ in range(draws):
        base = pd.Series(rng.normal(40.0, 6.0, n), index=seeds)  # seed effects shared by both sides
        null = compare(base + pd.Series(rng.normal(0.0, sd, n), index=seeds), base, n_boot=1)
        covered += null["ci_low"] <= 0.0 <= null["ci_high"]
        alt = compare(base + pd.Series(rng.normal(mde, sd, n), index=seeds), base, n_boot=1)
        detected += alt["p_ttest"] < 0.05
    assert 0.93 <= covered / draws <= 0.97
    assert 0.75 <= detected / draws <= 0.85


def test_mde_against_the_normal_approximation_and_power_function() -> None:
    assert mde_in_se(10_000) == pytest.approx(sps.norm.ppf(0.975) + sps.norm.ppf(0.8), abs=1e-3)
    for df in (1, 4, 9):
        assert t_test_power(mde_in_se(df), df) == pytest.approx(0.8, abs=1e-8)
    assert mde_paired(2.0, 5) == pytest.approx(mde_in_se(4) * 2.0 / math.sqrt(5))
    assert math.isnan(mde_paired(2.0, 1))


@pytest.mark.parametrize(("delta", "has_interval", "p_adj", "p_tost", "higher", "expected"), [
    (1.0, False, math.nan, math.nan, True, "n too small"),
    (1.0, True, 0.01, math.nan, True, "better"),
    (1.0, True, 0.01, math.nan, False, "worse"),  # a loss went up
    (-1.0, True, 0.049, 0.01, True, "worse"),  # a difference beats equivalence
    (0.1, True, 0.2, 0.01, True, "equivalent"),
    (0.1, True, 0.2, 0.2, True, "inconclusive"),
    (2.0, True, 0.06, math.nan, True, "inconclusive"),  # raw p may be < 0.05: only the adjusted p counts
])  # fmt: skip
def test_finding(delta: float, has_interval: bool, p_adj: float, p_tost: float, higher: bool, expected: str) -> None:
    assert finding(delta, has_interval, p_adj, p_tost, higher) == expected


def _frame(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """rows of (variant, seed, metric, value) in one ablation whose baseline is 'clip'."""
    order = {"clip": 0, "soft": 1, "soft_re": 2}
    return pd.DataFrame([{"ablation": "a", "variant": v, "label": v.upper(), "seed": s, "run": f"{v}{s}",
                          "benchmark": "bench", "metric": m, "value": x, "order": order[v], "key": f"bench/{m}",
                          "baseline": "clip", "run_dir": f"/r/{v}/{s}"} for v, s, m, x in rows])  # fmt: skip


def test_summarize_against_brute_force() -> None:
    data = {("clip", "top1"): [10.0, 11.0, 12.0], ("soft", "top1"): [12.0, 14.0, 13.0],
            ("soft_re", "top1"): [9.0, 10.0, 14.0], ("clip", "val_nce_loss"): [3.0, 3.2, 3.1],
            ("soft", "val_nce_loss"): [2.9, 3.0, 2.8], ("soft_re", "val_nce_loss"): [3.5, 3.3, 3.4]}  # fmt: skip
    frame = _frame([(v, s, m, vals[s]) for (v, m), vals in data.items() for s in range(3)])
    summary = summarize(frame, n_boot=3000, seed=0)
    assert list(summary["variant"].unique()) == ["clip", "soft", "soft_re"]  # ablation order
    for (v, m), vals in data.items():
        row = summary[(summary["variant"] == v) & (summary["metric"] == m)].iloc[0]
        assert row["n"] == 3 and row["seeds"] == "0,1,2" and row["label"] == v.upper()
        assert row["mean"] == pytest.approx(sum(vals) / 3)
        assert row["std"] == pytest.approx(statistics.stdev(vals))
        base = data[("clip", m)]
        if v == "clip":
            assert math.isnan(row["delta"]) and row["pairing"] == ""
            continue
        diffs = [x - y for x, y in zip(vals, base, strict=True)]
        assert row["delta"] == pytest.approx(sum(vals) / 3 - sum(base) / 3)
        ref = sps.ttest_rel(vals, base)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
        assert (row["boot_low"], row["boot_high"]) == pytest.approx(_loop_paired(np.array(diffs), 3000, 0))
        assert row["p_ttest"] == pytest.approx(ref.pvalue)
        assert math.isnan(row["mde"])  # no pilot sd for this key: the MDE never comes from these seeds
        assert row["p"] == pytest.approx(ref.pvalue) and row["family"] == "secondary (BH)"
    tested = summary[summary["p"].notna()]
    assert len(tested) == 4  # soft and soft_re on two metrics
    ranked = tested["p"].sort_values()
    bh = np.minimum.accumulate((ranked * 4 / np.arange(1, 5)).to_numpy()[::-1])[::-1].clip(max=1)
    assert tested.loc[ranked.index, "p_adj"].to_numpy() == pytest.approx(bh)
    # soft leads both columns, but its interval against the runner-up (clip) includes 0: nothing is bold
    assert not summary["best"].any()


def test_best_only_where_distinguishable_from_the_runner_up() -> None:
    data = {"clip": [10.0, 11.0, 12.0, 11.0], "soft": [14.0, 15.1, 15.9, 15.0], "soft_re": [13.5, 15.0, 16.0, 14.4]}
    frame = _frame([(v, s, "top1", vals[s]) for v, vals in data.items() for s in range(4)]
                   + [(v, s, "val_nce_loss", vals[s] / 10) for v, vals in data.items() for s in range(4)])  # fmt: skip
    summary = summarize(frame, n_boot=10)
    # soft vs soft_re (the runner-up on top-1): Δ = [0.5, 0.1, -0.1, 0.6], interval includes 0 -> no bold
    assert not summary.loc[summary["metric"] == "top1", "best"].any()
    # on the loss (lower is better) clip leads soft_re by 0.33 with a tight interval -> clip is bold
    best = summary[summary["best"]].set_index("metric")["variant"].to_dict()
    assert best == {"val_nce_loss": "clip"}


def test_summarize_marks_ties_and_explicit_baseline() -> None:
    frame = _frame([("clip", 0, "top1", 5.0), ("soft", 0, "top1", 5.0), ("soft_re", 0, "top1", 4.0)])
    summary = summarize(frame, {"a": "soft_re"}, n_boot=10)
    assert not summary["best"].any()  # one seed each: no interval against the runner-up, so nothing is bold
    assert summary.set_index("variant")["delta"].to_dict()["clip"] == pytest.approx(1.0)
    assert (summary["baseline"] == "soft_re").all()
