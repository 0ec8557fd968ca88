"""build_report end to end on hand-made runs: files, index content, figures, determinism, errors, the command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import yaml

from softclip.metric_catalog import load_catalog
from softclip.report import ReportError, build_report
from softclip.report.command import add_arguments, run
from softclip.report.paper import DEFAULT_REFERENCE
from softclip.report.stats import mde_paired
from softclip.report.tables import WRITERS, Style, fmt_num

from .fakes import BENCH_METRICS, base_config, make_grid, make_run, value
from .test_tables import assert_balanced_html, assert_balanced_latex

PNG = b"\x89PNG\r\n\x1a\n"


def _sweep(root: Path) -> None:
    """runs/sweeps/bt/trials/bt-t000N-s0 over beta x tau (no ablation.json)."""
    n = 0
    for beta in (0.1, 0.3):
        for tau in (0.05, 0.07):
            results = {b: {m: value(0, n, 0, m) for m in ms} for b, ms in BENCH_METRICS.items()}
            make_run(root / "bt" / "trials" / f"bt-t{n:04d}-s0", seed=0, results=results,
                     config=base_config(f"bt-t{n:04d}-s0", 0, beta=beta, tau=tau))  # fmt: skip
            n += 1


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    make_grid(root / "ablations", n_ablations=2, n_variants=3, seeds=(0, 1, 2))
    _sweep(root / "sweeps")
    bad = root / "ablations" / "abl0" / "v1" / "s2" / "eval" / "broken.json"
    bad.write_text("{not json")
    out = root / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(PNG)  # from an earlier build: removed
    path = build_report([root / "ablations", str(root / "sweeps" / "bt" / "trials" / "*")], out,
                        title="fake report", command="softclip report runs --out report",
                        machine={"cpus": 2, "python": "3.11"}, n_boot=300)  # fmt: skip
    return path, root


def test_outputs_exist(built: tuple[Path, Path]) -> None:
    path, root = built
    out = path.parent
    assert path == out / "report.md"
    for ablation in ("abl0", "abl1", "bt"):
        for fmt in WRITERS.names():
            assert (out / "tables" / f"{ablation}.{WRITERS.get(fmt).ext}").stat().st_size > 0
    expected = {"heatmap_bt", "bars_abl0", "bars_abl1", "bars_bt", "noise_abl0", "noise_abl1", "train_loss_abl0",
                "train_loss_abl1", "eval_abl0", "eval_abl1", "recall_abl0", "recall_abl1", "recall_bt"}  # fmt: skip
    pngs = {p.stem: p for p in (out / "figures").glob("*.png")}
    assert set(pngs) == expected  # stale.png removed; no curves for the sweep (no metrics.jsonl)
    assert all(p.stat().st_size > 1000 and p.read_bytes().startswith(PNG) for p in pngs.values())
    assert (out / "frame.csv").stat().st_size > 0 and (out / "stats.csv").stat().st_size > 0
    assert not list(out.rglob("*.tmp"))


def test_index_markdown(built: tuple[Path, Path]) -> None:
    path, _ = built
    text = path.read_text()
    assert text.startswith("# fake report\n") and "measured" in text
    assert "softclip report runs --out report" in text and "cpus: 2" in text
    for ablation in ("abl0", "abl1", "bt"):
        table = (path.parent / "tables" / f"{ablation}.md").read_text().strip()
        assert table in text  # every table inline
        for ext in ("md", "tex", "html", "csv"):
            assert f"(tables/{ablation}.{ext})" in text
    for png in (path.parent / "figures").glob("*.png"):
        assert f"(figures/{png.name})" in text
    assert "broken.json: unreadable JSON" in text and "22 runs in 3 ablations, 1 skipped file;" in text
    assert "| abl0 | v1 | variant 1 | 3 | 0, 1, 2 |" in text  # runs and seeds per variant
    assert "Paper reference" in text and "+6.8" in text and "+7.2" in text
    assert "| ImageNet zero-shot top-1 (%) | CC3M |  |  | +6.8 |" in text  # unsourced cells render empty
    assert "| β | mixing coefficient of the softened target | 0.3 |" in text
    assert "generated" not in text


def test_index_html_and_latex(built: tuple[Path, Path]) -> None:
    path, _ = built
    parser = assert_balanced_html((path.parent / "report.html").read_text())
    assert parser.tags.count("img") == len(list((path.parent / "figures").glob("*.png")))
    assert parser.tags.count("table") >= 3 + 1 + 2  # ablations, runs, paper
    for html_file in (path.parent / "tables").glob("*.html"):
        assert_balanced_html(html_file.read_text())
    for tex in (path.parent / "tables").glob("*.tex"):
        text = tex.read_text()
        header = next(line for line in text.splitlines() if line.startswith(r"\begin{tabular}"))
        assert_balanced_latex(text, ncols=len(header.split("{")[2].rstrip("}")))


def test_frame_csv_counts(built: tuple[Path, Path]) -> None:
    import pandas as pd

    path, _ = built
    frame = pd.read_csv(path.parent / "frame.csv")
    assert frame.groupby("ablation")["run_dir"].nunique().to_dict() == {"abl0": 9, "abl1": 9, "bt": 4}
    assert {"loss.beta", "loss.tau", "method", "noise"} <= set(frame.columns)
    stats = pd.read_csv(path.parent / "stats.csv")
    assert set(stats.loc[stats["ablation"] == "abl0", "baseline"]) == {"v0"}
    assert stats.loc[stats["ablation"] == "bt", "baseline"].isna().all()


def test_deterministic_and_baseline_override(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs", n_ablations=1, n_variants=2, seeds=(0, 1), curves=False)
    absent = "instance/map_easy"  # a known metric these runs lack
    a = build_report([tmp_path / "runs"], tmp_path / "a", n_boot=100, baseline="v1", metrics=f"retrieval/rsum,{absent}")
    b = build_report([tmp_path / "runs"], tmp_path / "b", n_boot=100, baseline="v1", metrics=["retrieval/rsum", absent])
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.parent) for p in b.parent.rglob("*") if p.is_file())
    for rel in files:
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes(), rel
    text = a.read_text()
    assert "Baseline: v1." in text and f"Requested metrics found in no run: {absent}." in text
    assert "| variant | n | RSUM |" in text


def test_an_unknown_metric_is_refused_with_the_closest_name(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs", n_ablations=1, n_variants=2, seeds=(0,), curves=False)
    with pytest.raises(ReportError, match=r"unknown metric 'retrieval/i2t_sem_mAP' \(did you mean 'retrieval/i2t_sem_map'"):
        build_report([tmp_path / "runs"], tmp_path / "out", metrics="retrieval/rsum,retrieval/i2t_sem_mAP")


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no run folders"):
        build_report([tmp_path], tmp_path / "out")
    make_grid(tmp_path / "runs", n_ablations=1, n_variants=2, seeds=(0,), curves=False)
    with pytest.raises(ReportError, match="did you mean 'v1'"):
        build_report([tmp_path / "runs"], tmp_path / "out", baseline="v11")
    with pytest.raises(ReportError, match="did you mean 'retrieval/rsum'"):
        build_report([tmp_path / "runs"], tmp_path / "out", metrics="retrieval/rsun")
    run_dir = tmp_path / "runs" / "abl0" / "v0" / "s0"
    for f in (run_dir / "eval").glob("*.json"):
        f.write_text("[]")
    os.remove(tmp_path / "runs" / "abl0" / "v1" / "s0" / "config.yaml")  # no longer a run folder
    with pytest.raises(ReportError, match="no readable results"):
        build_report([tmp_path / "runs"], tmp_path / "out")


def test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_grid(tmp_path / "runs", n_ablations=1, n_variants=2, seeds=(0,), curves=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--title", "T",
                              "--metrics", "zeroshot/top1", "--n-boot", "50"])  # fmt: skip
    assert run(args) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert report.startswith("# T\n") and "--n-boot 50" in report and "## Machine" in report
    assert str(tmp_path / "rep" / "report.md") in capsys.readouterr().out
    with pytest.raises(ReportError):
        run(parser.parse_args([str(tmp_path / "missing"), "--out", str(tmp_path / "rep2")]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x"])  # RUNS are required


def test_paper_reference_file_is_sourced() -> None:
    ref = yaml.safe_load(DEFAULT_REFERENCE.read_text())
    assert ref["paper"]["arxiv"] == "2303.17561"
    deltas = {r["pretraining"]: r["delta"] for r in ref["results"]}
    assert deltas == {"CC3M": 6.8, "CC12M": 7.2}
    for row in ref["results"] + ref["hyperparameters"]:
        assert "2303.17561" in row["source"]
    for row in ref["results"]:
        assert row["clip"] is None and row["softclip"] is None  # no absolute number we could source
    assert {h["config"]: h["value"] for h in ref["hyperparameters"]} == {
        "loss.beta": 0.3, "loss.tau": 0.07, "loss.soft_weight": 1.0, "loss.re_weight": 0.5}


def test_paper_row_shows_our_delta(tmp_path: Path) -> None:
    for v, name in enumerate(("clip", "softclip")):  # ablations/main.yaml, named by reports/paper_reference.yaml
        for s in (0, 1):
            make_run(tmp_path / "main" / name / f"s{s}", seed=s,
                     results={"zeroshot": {"top1": 10.0 + 5 * v + s * (1 + v)}},
                     meta={"ablation": "main", "variant": name, "baseline": "clip", "order": v})  # fmt: skip
    text = build_report([tmp_path / "main"], tmp_path / "rep", n_boot=50).read_text()
    assert "| +6.8 |" in text and "main: softclip vs clip, zeroshot/top1, n=2" in text
    mde = fmt_num(mde_paired(load_catalog().info("zeroshot/top1").pilot_sd, 2), Style())  # from the planning sd
    # Student-t at 2 pairs: ±t(0.975, 1)·sd/√2; one comparison in the report, so its BH p is its raw p
    assert f"| +5.50 [−0.85, 11.9], p=0.058, BH p=0.058; sd Δ 0.71, MDE {mde} |" in text
