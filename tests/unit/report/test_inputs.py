"""What a report accepts as input: each (ablation, variant, seed) once, and its own saved frame."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from softclip.report import ReportError, build_report, load_runs
from softclip.report.frame import frame_from_runs
from softclip.report.stats import summarize

from .fakes import make_grid, make_run


def test_the_same_ablation_twice_as_different_runs_is_an_error_naming_both(tmp_path: Path) -> None:
    make_grid(tmp_path / "a", n_ablations=1, n_variants=2, seeds=(0, 1), curves=False)
    make_run(tmp_path / "b" / "abl0" / "v1" / "s0", seed=0, results={"zeroshot": {"top1": 99.0}},
             meta={"ablation": "abl0", "variant": "v1", "seed": 0, "baseline": "v0"})  # fmt: skip
    with pytest.raises(ReportError) as err:
        load_runs([tmp_path / "a", tmp_path / "b"])
    text = str(err.value)
    assert "'abl0'" in text and "'v1'" in text and "seed 0" in text
    assert str(tmp_path / "a" / "abl0" / "v1" / "s0") in text and str(tmp_path / "b" / "abl0" / "v1" / "s0") in text


def test_a_byte_identical_copy_counts_once_with_a_note(tmp_path: Path) -> None:
    make_grid(tmp_path / "a", n_ablations=1, n_variants=2, seeds=(0, 1, 2), curves=False)
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    both = load_runs([tmp_path / "a", tmp_path / "copy"])
    once = load_runs([tmp_path / "a"])
    assert len(both.runs) == len(once.runs) == 6 and len(both.notes) == 6
    assert "byte-identical copy" in both.notes[0] and "counted once" in both.notes[0]
    a = summarize(frame_from_runs(both), n_boot=10)
    b = summarize(frame_from_runs(once), n_boot=10)
    pd.testing.assert_frame_equal(a, b)  # n = 3 paired seeds, not 6 unpaired values
    assert set(a.loc[a["variant"] == "v1", "pairing"]) == {"paired"} and set(a["n"]) == {3}
    text = build_report([tmp_path / "a", tmp_path / "copy"], tmp_path / "rep", n_boot=10).read_text()
    assert "## Notes" in text and "counted once" in text


def test_a_report_rebuilds_from_its_saved_frame(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs", n_ablations=2, n_variants=3, seeds=(0, 1, 2))
    first = build_report([tmp_path / "runs"], tmp_path / "first", n_boot=50)
    shutil.rmtree(tmp_path / "runs")  # the run folders are gone; frame.csv and curves.csv remain
    second = build_report([first.parent / "frame.csv"], tmp_path / "second", n_boot=50)
    for name in ("stats.csv", "frame.csv", "curves.csv", "tables/abl0.md", "tables/abl1.tex"):
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    assert {p.name for p in (first.parent / "figures").iterdir()} == {p.name for p in (second.parent / "figures").iterdir()}
    body = lambda p: p.read_text().split("## Ablation", 1)[1]  # noqa: E731  (the inputs line differs)
    assert body(first) == body(second)


def test_rebuilding_in_place_keeps_curve_figures_it_cannot_redraw(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs", n_ablations=1, n_variants=2, seeds=(0, 1))
    report = build_report([tmp_path / "runs"], tmp_path / "rep", n_boot=10)
    (report.parent / "curves.csv").unlink()  # a report from before curves.csv existed
    shutil.rmtree(tmp_path / "runs")
    frame = tmp_path / "saved.csv"
    shutil.copy(report.parent / "frame.csv", frame)
    again = build_report([frame], report.parent, n_boot=10).read_text()
    assert (report.parent / "figures" / "train_loss_abl0.png").is_file()
    assert "carried over from the earlier build" in again and "figures/train_loss_abl0.png" in again


def test_a_csv_that_is_not_a_frame_names_its_missing_columns(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match=r"x\.csv: not a result frame .*no column ablation, variant"):
        load_runs([bad])


def test_runs_section_is_relative_to_the_runs_root(tmp_path: Path) -> None:
    make_grid(tmp_path / "runs" / "ablations", n_ablations=1, n_variants=2, seeds=(0, 1), curves=False)
    dirs = sorted(str(p) for p in (tmp_path / "runs" / "ablations" / "abl0").glob("v*/s*"))
    text = build_report(dirs, tmp_path / "rep", n_boot=10).read_text()
    runs = text.split("## Runs", 1)[1].split("## Ablation", 1)[0]
    assert "inputs: 4 paths" in runs and "| abl0 | v1 | variant 1 | 2 | 0, 1 | none | v1 |" in runs
    assert runs.count(str(tmp_path)) == 1  # the root, once; not every run folder
