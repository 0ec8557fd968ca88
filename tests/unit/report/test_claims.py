"""What a claim may rest on: Holm and BH against hand computations, TOST by hand and by simulation, differences
of differences against brute force, primary families in ablation files, findings worded from adjusted p only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats as sps

from softclip.ablation_spec import AblationSpec
from softclip.report import build_report
from softclip.report.contrasts import diff_of_diffs, factorial_quads, interactions
from softclip.report.multiplicity import PRIMARY, SECONDARY, Family, bh, correct, holm
from softclip.report.stats import tost

from .fakes import make_run

# ------------------------------------------------------------------------------------------ Holm and BH


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 (m = 4): 4·0.01, max(.04, 3·.02), max(.06, 2·.03), max(.06, .04)
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.3, 0.5]) == pytest.approx([0.6, 0.6])  # capped by the step-down max: 2·0.3, max(0.6, 0.5)
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_bh_by_hand() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 (m = 4): m/i·p = .04, .04, .04, .04; step-up min keeps .04
    assert bh([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.04, 0.04, 0.04, 0.04])
    # 0.001, 0.02, 0.5 (m = 3): 3·.001, 3/2·.02 = .03, 3/3·.5 = .5
    assert bh([0.5, 0.001, 0.02]) == pytest.approx([0.5, 0.003, 0.03])
    assert bh([0.04, 0.9]) == pytest.approx([0.08, 0.9])


@pytest.mark.parametrize("adjust", [holm, bh])
def test_one_test_ties_equal_p_and_nan(adjust) -> None:
    assert adjust([0.03]) == pytest.approx([0.03])  # m = 1: unchanged
    assert adjust([0.02, 0.02, 0.02]) == pytest.approx([0.06, 0.06, 0.06] if adjust is holm else [0.02] * 3)
    out = adjust([0.01, math.nan, 0.01])  # NaN: no test, not counted
    assert math.isnan(out[1]) and out[0] == out[2] == pytest.approx(0.02 if adjust is holm else 0.01)
    tied = adjust([0.01, 0.04, 0.04, 0.2])  # tied p-values get equal adjusted values in any order
    assert tied[1] == tied[2] and adjust([0.04, 0.01, 0.2, 0.04])[0] == pytest.approx(tied[1])


def test_correct_holm_per_primary_family_and_bh_over_the_rest() -> None:
    rows = pd.DataFrame({
        "ablation": ["a", "a", "a", "b", "b"], "variant": ["x", "x", "y", "x", "x"],
        "baseline": ["c", "c", "c", "c", "c"], "key": ["zeroshot/top1", "retrieval/i2t_sem_map", "zeroshot/top1",
                                                    "zeroshot/top1", "zeroshot/shape_acc"],
        "p": [0.01, 0.02, 0.03, 0.04, 0.001], "kind": "contrast"})  # fmt: skip
    rows.loc[5] = ["b", "x", "c", "target/precision", 1e-6, "contrast"]  # a diagnostic, never tested
    fams = {"a": Family((("x", "c"),), ("zeroshot/top1", "retrieval/i2t_sem_map"))}
    (out,) = correct([rows], fams)
    assert list(out["family"]) == [PRIMARY, PRIMARY, SECONDARY, SECONDARY, "not counted", "not counted"]
    assert out["p_adj"].iloc[:2].tolist() == pytest.approx(holm([0.01, 0.02]))
    assert out["p_adj"].iloc[2:4].tolist() == pytest.approx(bh([0.03, 0.04]))  # shape acc = top-1: not counted
    assert out["p_adj"].iloc[4:].isna().all()


# ------------------------------------------------------------------------------------------------- TOST


def test_tost_by_hand() -> None:
    d = np.array([0.5, -0.2, 0.3, 0.1, 0.4])  # mean 0.22, sd 0.277, se 0.1241
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(5)
    p_low = sps.t.sf((mean + 1.0) / se, 4)
    p_high = sps.t.cdf((mean - 1.0) / se, 4)
    p, low, high = tost(d, 1.0)
    assert p == pytest.approx(max(p_low, p_high)) and p == pytest.approx(p_high)
    half = sps.t.ppf(0.95, 4) * se
    assert (low, high) == pytest.approx((mean - half, mean + half))
    assert p < 0.05 and -1.0 < low and high < 1.0  # equivalence iff the 90% interval lies inside ±m
    p_tight, *_ = tost(d, 0.5)  # 0.22 + 2.132·0.124 = 0.48 < 0.5, barely
    assert p_tight < 0.05 and tost(d, 0.45)[0] > 0.05
    assert all(math.isnan(x) for x in tost(d[:1], 1.0)) and math.isnan(tost(d, math.nan)[0])


def test_tost_size_at_the_margin_by_simulation() -> None:
    """A true difference exactly at the margin is called equivalent at most 5% of the time (n = 5 pairs)."""
    rng = np.random.default_rng(0)
    n, sims, margin, sd = 5, 2000, 1.0, 0.8
    d = rng.normal(margin, sd, size=(sims, n))
    mean, se = d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n)
    p = np.maximum(sps.t.sf((mean + margin) / se, n - 1), sps.t.cdf((mean - margin) / se, n - 1))
    rate = float((p < 0.05).mean())
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / sims)  # 5% plus two binomial standard errors
    assert rate > 0.02  # and the test is not vacuous: near its nominal size at the margin
    rows = [tost(d[i], margin)[0] for i in range(50)]  # the vectorised formula is the function's
    assert rows == pytest.approx(p[:50].tolist())


# -------------------------------------------------------------------------------- difference of differences


def _frame(cells: dict[str, dict[str, object]], values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for order, (variant, factors) in enumerate(cells.items()):
        for seed, value in enumerate(values[variant]):
            rows.append({"ablation": "m", "variant": variant, "label": variant, "seed": seed, "run": f"{variant}{seed}",
                         "benchmark": "zeroshot", "metric": "top1", "value": value, "order": order,
                         "key": "zeroshot/top1", "baseline": "clip", "run_dir": f"/r/{variant}/{seed}", **factors})  # fmt: skip
    return pd.DataFrame(rows)


def test_difference_of_differences_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    cells = {"clip": {}, "ce_ce": {"soft_div": "ce", "re_div": "ce"}, "sym_ce": {"soft_div": "symkl", "re_div": "ce"},
             "ce_sym": {"soft_div": "ce", "re_div": "symkl"}, "sym_sym": {"soft_div": "symkl", "re_div": "symkl"}}
    values = {v: list(rng.normal(50, 3, 6)) for v in cells}
    values["sym_sym"][5] = math.nan  # a failed seed: left out of every pair
    frame = _frame(cells, values)
    table = frame.drop_duplicates("variant").set_index("variant")[["soft_div", "re_div"]]
    assert factorial_quads(table) == [("sym_sym", "ce_sym", "sym_ce", "ce_ce")]
    out = interactions(frame).iloc[0]
    brute = [(values["sym_sym"][s] - values["ce_sym"][s]) - (values["sym_ce"][s] - values["ce_ce"][s])
             for s in range(5)]  # fmt: skip
    assert out["n_pairs"] == 5 and out["delta"] == pytest.approx(np.mean(brute))
    ref = sps.ttest_1samp(brute, 0.0)
    assert out["p"] == pytest.approx(ref.pvalue)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    series = {v: frame[frame["variant"] == v].set_index("seed")["value"] for v in cells}
    d, seeds = diff_of_diffs(series["sym_sym"], series["ce_sym"], series["sym_ce"], series["ce_ce"])
    assert seeds == [0, 1, 2, 3, 4] and d.tolist() == pytest.approx(brute)


def test_compare_within_interactions_pair_each_level_with_the_reference_level() -> None:
    cells = {f"{m}_n{n}": {"method": m, "noise": n} for n in (0.0, 0.6) for m in ("clip", "soft")}
    values = {"clip_n0.0": [50, 52, 51], "soft_n0.0": [47, 48, 47], "clip_n0.6": [40, 41, 43], "soft_n0.6": [40, 40, 42]}
    frame = _frame(cells, {k: [float(x) for x in v] for k, v in values.items()})
    frame["baseline"] = frame["variant"].str.replace("soft", "clip")
    out = interactions(frame)
    assert len(out) == 1 and (out.iloc[0]["variant"], out.iloc[0]["ref_variant"]) == ("soft_n0.6", "soft_n0.0")
    brute = [(values["soft_n0.6"][s] - values["clip_n0.6"][s]) - (values["soft_n0.0"][s] - values["clip_n0.0"][s])
             for s in range(3)]  # fmt: skip
    assert out.iloc[0]["delta"] == pytest.approx(np.mean(brute))


# ------------------------------------------------------------------------------------- primary families


def _spec(**primary: object) -> AblationSpec:
    return AblationSpec.model_validate({"name": "t", "base": "base.yaml", "baseline": "clip", "primary": primary,
                                        "variants": {"clip": {}, "soft": {}, "ls": {}}})  # fmt: skip


def test_primary_family_pairs() -> None:
    spec = _spec(contrasts=["soft", "soft:ls"], metrics=["zeroshot/top1", "retrieval/i2t_sem_map"])
    assert spec.primary_pairs() == [("soft", "clip"), ("soft", "ls")]
    assert _spec(contrasts="all", metrics=["zeroshot/top1"]).primary_pairs() == [("soft", "clip"), ("ls", "clip")]


@pytest.mark.parametrize(("primary", "message"), [
    ({"contrasts": ["sfot"], "metrics": ["zeroshot/top1"]}, "unknown variant"),
    ({"contrasts": ["soft:nope"], "metrics": ["zeroshot/top1"]}, "unknown variant"),
    ({"contrasts": ["clip"], "metrics": ["zeroshot/top1"]}, "no baseline"),
    ({"contrasts": ["soft"], "metrics": ["zeroshot/top_1"]}, "unknown metric 'zeroshot/top_1' .did you mean 'zeroshot/top1'"),
    ({"contrasts": ["soft"], "metrics": ["zeroshot/shape_acc"]}, "counted as 'zeroshot/top1'"),
    ({"contrasts": ["soft"], "metrics": []}, "at least 1"),
])  # fmt: skip
def test_a_bad_primary_family_is_a_config_error(primary: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(**primary)


def test_every_ablation_file_declares_a_valid_primary_family() -> None:
    from softclip.ablate import load_ablation

    root = Path(__file__).resolve().parents[3] / "ablations"
    for path in sorted(root.glob("*.yaml")):
        if path.name != "base.yaml":
            spec = load_ablation(path, "quick")
            assert spec.primary is not None and spec.primary_pairs(), path.name


# ------------------------------------------------------------------------------------------- findings


def test_findings_word_better_only_from_the_adjusted_p(tmp_path: Path) -> None:
    """Three primary contrasts with raw p ≈ 0.02-0.04: none survives Holm, so no 'better' in findings.md."""
    gains = {"a": [1.0, 2.6, 0.4, 1.9, 0.5], "b": [0.9, 2.2, 0.3, 1.8, 0.7], "c": [1.1, 2.0, 0.2, 2.2, 0.6]}
    for v, name in enumerate(("clip", *gains)):
        for s in range(5):
            top1 = 50.0 + s + (gains[name][s] if name in gains else 0.0)
            make_run(tmp_path / "runs" / "t" / name / f"s{s}", seed=s, results={"zeroshot": {"top1": top1}},
                     meta={"ablation": "t", "variant": name, "baseline": "clip", "order": v, "seeds": list(range(5)),
                           "primary": {"contrasts": [[g, "clip"] for g in gains], "metrics": ["zeroshot/top1"]}})  # fmt: skip
    report = build_report([tmp_path / "runs"], tmp_path / "rep", n_boot=20)
    stats = pd.read_csv(report.parent / "stats.csv")
    tested = stats[stats["p"].notna()]
    assert (tested["p"] < 0.05).all() and (tested["p_adj"] > 0.05).all()  # raw p passes, Holm does not
    assert set(tested["family"]) == {PRIMARY}
    text = (report.parent / "findings.md").read_text()
    section = text.split("\n## t\n")[1].split("\n## ")[0]
    assert "better" not in section and "worse" not in section and "Holm" in section
    assert "ablation.json of its runs" in section
    assert (tested["p"] * 3 >= tested["p_adj"] - 1e-12).all() and tested["p_adj"].min() == pytest.approx(3 * tested["p"].min())


def test_the_metric_catalog_knows_every_committed_key_and_suite_benchmark() -> None:
    import yaml

    from softclip.metric_catalog import load_catalog

    root = Path(__file__).resolve().parents[3]
    catalog = load_catalog()
    for frame in sorted(root.glob("reports/*/frame.csv")):
        keys = set(pd.read_csv(frame, usecols=["key"])["key"])
        assert all(catalog.is_known(k) for k in keys), (frame, sorted(k for k in keys if not catalog.is_known(k)))
    for suite in sorted(root.glob("eval/*.yaml")):
        for bench, spec in yaml.safe_load(suite.read_text())["benchmarks"].items():
            assert catalog.benchmarks.get(bench) == spec["evaluator"], (suite.name, bench)
    for key, info in catalog.metrics.items():
        assert info.alias_of or (info.margin > 0 and info.reason), key


def test_calibration_curve_from_a_synthetic_frame(tmp_path: Path) -> None:
    """Oracle variants at precision knobs 0, 0.5, 1 plus SoftCLIP at its own measured precision: a table row per
    (variant, metric) with Δ vs CLIP, and a figure."""
    variants = {"clip": (None, 0.05, 0.0), "oracle_p0": (0.0, 0.0, -4.0), "oracle_p05": (0.5, 0.5, 3.0),
                "oracle_p1": (1.0, 1.0, 10.0), "softclip": (None, 0.21, -2.0)}  # knob, measured precision, gain
    for order, (name, (knob, precision, gain)) in enumerate(variants.items()):
        for s in range(4):
            results = {"zeroshot": {"top1": 50.0 + s + gain + 0.3 * (s % 2) * order},
                       "retrieval": {"i2t_sem_map": 30.0 + s + 2 * gain - 0.2 * (s % 3)},
                       "target": {"precision": precision + 0.01 * s}}  # fmt: skip
            factors = {"precision": knob} if knob is not None else {}
            make_run(tmp_path / "runs" / "calibration" / name / f"s{s}", seed=s, results=results,
                     meta={"ablation": "calibration", "variant": name, "baseline": "clip", "order": order,
                           "factors": factors})  # fmt: skip
    report = build_report([tmp_path / "runs"], tmp_path / "rep", n_boot=20)
    table = pd.read_csv(report.parent / "calibration.csv")
    assert set(table["variant"]) == {"oracle_p0", "oracle_p05", "oracle_p1", "softclip"}
    assert set(table["key"]) == {"zeroshot/top1", "retrieval/i2t_sem_map"}
    soft = table[(table["variant"] == "softclip") & (table["key"] == "zeroshot/top1")].iloc[0]
    assert not soft["on_curve"] and soft["precision"] == pytest.approx(0.21 + 0.015)
    assert soft["delta"] == pytest.approx(-2.0 + 0.3 * 4 * 0.5)  # gain + the seed-parity term of order 4
    curve = table[table["on_curve"] & (table["key"] == "retrieval/i2t_sem_map")].sort_values("knob")
    assert curve["delta"].tolist() == pytest.approx([-8.0, 6.0, 20.0])
    assert (report.parent / "figures" / "calibration_calibration.png").is_file()
    assert "oracle's curve" in (report.parent / "findings.md").read_text()
    validity = pd.read_csv(report.parent / "validity.csv")
    assert set(validity["variant"]) == {"oracle_p1"}  # the oracle at precision 1 is the control here


def test_failed_unfinished_and_missing_seeds_are_shown(tmp_path: Path) -> None:
    for order, name in enumerate(("clip", "soft")):
        for s in range(4):
            if name == "soft" and s == 3:
                continue  # missing: the ablation declares seed 3
            top1 = math.nan if (name == "soft" and s == 0) else 50.0 + s + order  # seed 0 diverged
            make_run(tmp_path / "runs" / "a" / name / f"s{s}", seed=s, results={"zeroshot": {"top1": top1}},
                     done=not (name == "soft" and s == 1),  # seed 1 still training
                     meta={"ablation": "a", "variant": name, "baseline": "clip", "order": order, "seeds": [0, 1, 2, 3]})  # fmt: skip
    report = build_report([tmp_path / "runs"], tmp_path / "rep", n_boot=20)
    seeds = pd.read_csv(report.parent / "seeds.csv").set_index("variant")
    assert (seeds.loc["clip", "ok"], seeds.loc["clip", "detail"]) == (4, pytest.approx(math.nan, nan_ok=True))
    soft = seeds.loc["soft"]
    assert (soft["expected"], soft["ok"], soft["failed"], soft["unfinished"], soft["missing"]) == (4, 1, 1, 1, 1)
    assert soft["detail"] == "s0: non-finite metrics; s1: unfinished (no done.json); s3: missing"
    table = (report.parent / "tables" / "a.md").read_text()
    assert "[flagged: 3 of 4 seeds without usable results" in table
    text = (report.parent / "findings.md").read_text()
    assert "- soft: s0: non-finite metrics; s1: unfinished (no done.json); s3: missing" in text
