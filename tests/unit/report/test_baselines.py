"""Per-variant baselines in reports: the frame column, Δ against each variant's own baseline, the vs column."""

from __future__ import annotations

import io
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from softclip.report import build_report, collect, summarize
from softclip.report.stats import variant_baselines
from softclip.report.tables import WRITERS, build_tables

from .fakes import make_run
from .test_tables import assert_balanced_html, assert_balanced_latex

SEEDS = (0, 1, 2, 3, 4)
NOISE = {"clip_n0": ("CLIP", 0), "soft_n0": ("SoftCLIP", 0), "clip_n1": ("CLIP", 1), "soft_n1": ("SoftCLIP", 1)}
RESULTS = {"zeroshot": ["top1"], "retrieval": ["rsum", "val_nce_loss"]}


def fake(variant: int, seed: int, metric: str) -> float:
    """Deterministic values with a seed x variant interaction, so paired differences vary."""
    x = 30.0 + 4.0 * variant + (seed * 1.3) % 2.1 + 0.7 * ((seed * (variant + 3)) % 4) + sum(map(ord, metric)) % 7
    return x / 10 if "loss" in metric else x


def make_noise(root: Path, baselines: dict[str, str] | None = None) -> dict[tuple[str, str, int], float]:
    """``root/noise/<v>/s<seed>`` (baseline: CLIP at the same level) and ``root/main`` (one baseline, clip)."""
    values: dict[tuple[str, str, int], float] = {}
    per_variant = baselines or {v: f"clip_n{level}" for v, (_, level) in NOISE.items()}
    grids = {"noise": [(v, f"{m} @ {lvl}", {"method": m, "noise": lvl}, per_variant[v])
                       for v, (m, lvl) in NOISE.items()],
             "main": [("clip", "CLIP", {"method": "CLIP"}, "clip"), ("soft", "SoftCLIP", {"method": "SoftCLIP"}, "clip")]}  # fmt: skip
    for ablation, variants in grids.items():
        for order, (variant, label, factors, baseline) in enumerate(variants):
            for seed in SEEDS:
                results = {b: {m: fake(order, seed, m) for m in ms} for b, ms in RESULTS.items()}
                values.update({(variant, f"{b}/{m}", seed): x for b, ms in results.items() for m, x in ms.items()})
                meta = {"ablation": ablation, "variant": variant, "label": label, "seed": seed, "order": order,
                        "baseline": baseline, "factors": factors}  # fmt: skip
                make_run(root / ablation / variant / f"s{seed}", seed=seed, results=results, meta=meta)
    return values


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, pd.DataFrame]:
    root = tmp_path_factory.mktemp("baselines")
    values = make_noise(root)
    return root, values, collect([root])


def _per_variant(frame: pd.DataFrame, ablation: str) -> dict[str, str]:
    part = frame[frame["ablation"] == ablation].drop_duplicates("variant")
    return dict(zip(part["variant"], part["baseline"], strict=True))


def test_frame_baseline_column_is_per_variant_and_override_wins(noise) -> None:
    root, _, frame = noise
    assert _per_variant(frame, "noise") == {"clip_n0": "clip_n0", "soft_n0": "clip_n0", "clip_n1": "clip_n1",
                                            "soft_n1": "clip_n1"}  # fmt: skip
    assert set(_per_variant(frame, "main").values()) == {"clip"}
    forced = collect([root], baseline="clip_n1")  # --baseline: every variant of the ablations that have it
    assert set(_per_variant(forced, "noise").values()) == {"clip_n1"}
    assert set(_per_variant(forced, "main").values()) == {"clip"}
    assert variant_baselines(frame)[("noise", "soft_n1")] == "clip_n1"
    assert variant_baselines(frame.drop(columns="baseline"))[("noise", "soft_n1")] is None


def test_a_baseline_that_is_no_variant_falls_back_to_the_ablations(tmp_path: Path) -> None:
    for variant, named in (("a", "a"), ("b", "a"), ("c", "ghost")):
        make_run(tmp_path / "x" / variant / "s0", seed=0, results={"zeroshot": {"top1": 1.0}},
                 meta={"ablation": "x", "variant": variant, "baseline": named})  # fmt: skip
    make_run(tmp_path / "x" / "d" / "s0", seed=0, results={"zeroshot": {"top1": 2.0}})  # layout only: no meta
    assert _per_variant(collect([tmp_path]), "x") == {"a": "a", "b": "a", "c": "a", "d": "a"}


def _loop_bootstrap(d: list[float], n_boot: int, seed: int) -> tuple[float, float]:
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile([sum(d[i] for i in row) / len(row) for row in idx], [2.5, 97.5])
    return float(lo), float(hi)


def test_summarize_against_each_variants_own_baseline_brute_force(noise) -> None:
    _, values, frame = noise
    summary = summarize(frame, n_boot=400, seed=0).set_index(["ablation", "variant", "key"])
    expected = {"clip_n0": "clip_n0", "soft_n0": "clip_n0", "clip_n1": "clip_n1", "soft_n1": "clip_n1"}
    for variant, base in expected.items():
        for key in ("zeroshot/top1", "retrieval/rsum", "retrieval/val_nce_loss"):
            row = summary.loc[("noise", variant, key)]
            assert row["baseline"] == base
            if variant == base:  # its own baseline: no Δ
                assert math.isnan(row["delta"]) and row["pairing"] == "" and math.isnan(row["p_ttest"])
                continue
            x = [values[(variant, key, s)] for s in SEEDS]
            b = [values[(base, key, s)] for s in SEEDS]
            diffs = [xi - bi for xi, bi in zip(x, b, strict=True)]
            assert row["delta"] == pytest.approx(sum(diffs) / len(diffs))
            half = sps.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["delta"] - half, row["delta"] + half))
            assert (row["boot_low"], row["boot_high"]) == pytest.approx(_loop_bootstrap(diffs, 400, 0))
            assert row["sd_diff"] == pytest.approx(statistics.stdev(diffs))
            assert row["p_ttest"] == pytest.approx(sps.ttest_rel(x, b).pvalue)
            assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(diffs).pvalue)
            assert (row["pairing"], row["n_pairs"]) == ("paired", len(SEEDS))


def test_summarize_mapping_forms(noise) -> None:
    _, values, frame = noise
    top1 = lambda v: float(np.mean([values[(v, "zeroshot/top1", s)] for s in SEEDS]))  # noqa: E731
    one = summarize(frame, {"noise": "clip_n0", "main": "clip"}, n_boot=50).set_index(["variant", "key"])
    assert one.loc[("soft_n1", "zeroshot/top1"), "delta"] == pytest.approx(top1("soft_n1") - top1("clip_n0"))
    assert one.loc[("clip_n1", "zeroshot/top1"), "delta"] == pytest.approx(top1("clip_n1") - top1("clip_n0"))
    mixed = summarize(frame, {"noise": "clip_n0", ("noise", "soft_n1"): "soft_n0"}, n_boot=50)
    mixed = mixed.set_index(["variant", "key"])
    assert mixed.loc[("soft_n1", "zeroshot/top1"), "delta"] == pytest.approx(top1("soft_n1") - top1("soft_n0"))
    assert mixed.loc[("soft_n0", "zeroshot/top1"), "baseline"] == "clip_n0"
    assert mixed.loc[("soft", "zeroshot/top1"), "baseline"] == ""  # main not in the mapping: no baseline


def test_mixed_baselines_add_a_vs_column_in_every_format(noise) -> None:
    table = build_tables(summarize(noise[2], n_boot=100))["noise"]
    assert table.mixed and table.baseline is None and "Δ vs each row's baseline (column vs)" in table.caption
    assert [(r.variant, r.is_baseline, r.vs) for r in table.rows] == [
        ("clip_n0", True, ""), ("soft_n0", False, "CLIP @ 0"), ("clip_n1", True, ""), ("soft_n1", False, "CLIP @ 1")]
    md = WRITERS.get("md").render(table).splitlines()
    assert md[0].startswith("| variant | vs | n | zero-shot top-1 |") and md[1].startswith("|:--|:--|--:|--:|")
    assert md[2].startswith("| CLIP @ 0 (baseline) |  | 5 | ") and "(+" not in md[2] and "(−" not in md[2]
    assert md[5].startswith("| SoftCLIP @ 1 | CLIP @ 1 | 5 | ") and re.search(r"\(\+\d+\.\d \[.*\], p[=<]", md[5])
    tex = WRITERS.get("latex").render(table)
    assert_balanced_latex(tex, ncols=3 + len(table.columns))
    assert "variant & vs & $n$ &" in tex and r"SoftCLIP @ 1 & CLIP @ 1 & 5 &" in tex and "column vs" in tex
    html = WRITERS.get("html").render(table)
    parser = assert_balanced_html(html)
    assert parser.tags.count("tr") == 1 + 4 and "<th>vs</th>" in html and "<td>CLIP @ 1</td>" in html
    assert "column vs" in html
    csv = pd.read_csv(io.StringIO(WRITERS.get("csv").render(table)), keep_default_na=False)
    assert list(csv.columns[list(csv.columns).index("baseline"):][:2]) == ["baseline", "vs"]
    assert dict(zip(csv["variant"], csv["vs"], strict=True)) == {"clip_n0": "", "soft_n0": "CLIP @ 0", "clip_n1": "",
                                                                 "soft_n1": "CLIP @ 1"}  # fmt: skip


def test_one_baseline_renders_as_the_ablation_level_comparison(noise) -> None:
    frame = noise[2]
    per_row = build_tables(summarize(frame, n_boot=100))["main"]
    old_style = build_tables(summarize(frame, {"main": "clip"}, n_boot=100))["main"]  # the {ablation: v} form
    assert not per_row.mixed and per_row.baseline == "clip" and "Δ vs clip:" in per_row.caption
    for name in WRITERS.names():
        text = WRITERS.get(name).render(per_row)
        assert text == WRITERS.get(name).render(old_style), name
        assert "vs," not in text and "| vs |" not in text and "<th>vs</th>" not in text
    assert WRITERS.get("md").render(per_row).startswith("| variant | n | zero-shot top-1 | RSUM |")
    forced = build_tables(summarize(collect([noise[0]], baseline="clip_n0"), n_boot=100))["noise"]
    assert not forced.mixed and forced.baseline == "clip_n0"  # --baseline: one baseline again, no vs column


def test_report_says_what_each_delta_is_against(noise, tmp_path: Path) -> None:
    report = build_report([noise[0]], tmp_path / "rep", n_boot=50, paper_reference=None)
    text = report.read_text()
    assert "Each variant is compared with its own baseline (column vs): CLIP @ 0, CLIP @ 1." in text
    assert "Baseline: clip." in text and "| variant | vs | n |" in text
    assert (tmp_path / "rep" / "tables" / "noise.md").read_text().startswith("| variant | vs | n |")
    assert (tmp_path / "rep" / "tables" / "main.md").read_text().startswith("| variant | n |")
    stats = pd.read_csv(tmp_path / "rep" / "stats.csv")
    soft = stats[(stats["variant"] == "soft_n1") & (stats["key"] == "zeroshot/top1")].iloc[0]
    assert soft["baseline"] == "clip_n1" and "vs" not in stats.columns
