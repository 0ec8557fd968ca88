"""Run discovery and the tidy frames: layouts, metadata, factors, symlinks, bad files, curves."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from softclip.report import ReportError, collect, curves
from softclip.report.discover import identity_from_layout, load_runs
from softclip.report.frame import COLUMNS, config_values, factor_columns
from softclip.runfiles import RunFileError

from .fakes import base_config, make_grid, make_run


def test_collect_tidy_frame_from_ablation_runs(tmp_path: Path) -> None:
    make_grid(tmp_path / "ablations", n_ablations=2, n_variants=3, seeds=(0, 1))
    frame = collect([tmp_path / "ablations"])
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert set(factor_columns(frame)) == {"method", "noise"}
    assert frame.groupby("ablation")["run_dir"].nunique().to_dict() == {"abl0": 6, "abl1": 6}
    row = frame[(frame["ablation"] == "abl1") & (frame["variant"] == "v2") & (frame["seed"] == 1)
                & (frame["key"] == "retrieval/rsum")].iloc[0]  # fmt: skip
    assert row["value"] == pytest.approx(20.0 + 14.0 + 3.0 + (1.7 % 2.3) + 2.0 + 0.6 * (4 % 3))
    assert (row["label"], row["order"], row["baseline"], row["method"]) == ("variant 2", 2.0, "v0", "SoftCLIP")
    assert row["benchmark"] == "retrieval" and row["metric"] == "rsum" and row["run"] == "abl1-v2-s1"
    assert list(frame.drop_duplicates("variant")["variant"]) == ["v0", "v1", "v2"]  # by order
    assert frame.attrs["skipped"] == []


def test_layout_rules() -> None:
    assert identity_from_layout(Path("/r/ablations/targets/hard/s3"))[:3] == ("targets", "hard", 3)
    assert identity_from_layout(Path("/r/sweeps/bt/trials/bt-t0007-s1"))[:3] == ("bt", "t0007", 1)
    assert identity_from_layout(Path("/r/sweeps/bt/trials/7/s2"))[:3] == ("bt", "7", 2)
    assert identity_from_layout(Path("/r/runs/demo"))[:4] == ("runs", "demo", None, "flat")


def test_runs_without_metadata_take_layout_and_config_factors(tmp_path: Path) -> None:
    for beta in (0.1, 0.5):
        for tau in (0.05, 0.1):
            n = len(list((tmp_path / "bt" / "trials").glob("*"))) if (tmp_path / "bt").exists() else 0
            make_run(tmp_path / "bt" / "trials" / f"bt-t{n:04d}-s0", seed=0, results={"retrieval": {"rsum": beta + tau}},
                     config=base_config(f"bt-t{n:04d}-s0", 0, beta=beta, tau=tau))  # fmt: skip
    frame = collect([str(tmp_path / "bt" / "trials" / "*")])  # a glob, as the shell or the user writes it
    assert set(frame["ablation"]) == {"bt"} and sorted(frame["variant"]) == ["t0000", "t0001", "t0002", "t0003"]
    assert set(factor_columns(frame)) == {"loss.beta", "loss.tau"}  # name and seeds vary too but are not factors
    assert set(frame["label"]) == {"beta=0.1, tau=0.05", "beta=0.1, tau=0.1", "beta=0.5, tau=0.05",
                                   "beta=0.5, tau=0.1"}  # fmt: skip
    cfg = config_values(load_runs([tmp_path]), ["loss.beta", "loss.tau", "missing.key"])
    assert sorted(zip(cfg["loss.beta"], cfg["loss.tau"], strict=True)) == [(0.1, 0.05), (0.1, 0.1), (0.5, 0.05),
                                                                           (0.5, 0.1)]  # fmt: skip
    assert cfg["missing.key"].isna().all()


def test_bad_json_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path / "a" / "v" / "s0", seed=0, results={"zeroshot": {"top1": 50.0}})
    (run / "eval" / "retrieval.json").write_text('{"metrics": {"rsum": 1')
    (run / "eval" / "instance.json").write_text('["not", "a", "mapping"]')
    (run / "eval" / "cache").mkdir()
    (run / "eval" / "cache" / "x.json").write_text("garbage")  # sub-folders are ignored
    (run / "eval" / "notes.txt").write_text("ignored")
    frame = collect([tmp_path])
    assert list(frame["key"]) == ["zeroshot/top1"]
    reasons = dict(frame.attrs["skipped"])
    assert set(reasons) == {str(run / "eval" / "retrieval.json"), str(run / "eval" / "instance.json")}
    assert "retrieval.json" in caplog.text


def test_bad_config_and_bad_ablation_json(tmp_path: Path) -> None:
    good = make_run(tmp_path / "abl" / "v1" / "s0", seed=0, results={"zeroshot": {"top1": 1.0}})
    bad = make_run(tmp_path / "abl" / "v2" / "s0", seed=0, results={"zeroshot": {"top1": 2.0}})
    (bad / "config.yaml").write_text("key: [unclosed")
    collection = load_runs([tmp_path])
    assert [r.variant for r in collection.runs] == ["v1"] and len(collection.skipped) == 1
    (good / "ablation.json").write_text("{oops")  # a damaged ablation.json: an error naming it, no phantom run
    with pytest.raises(RunFileError, match=f"{good / 'ablation.json'} is damaged"):
        load_runs([tmp_path])


def test_missing_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="nowhere"):
        collect([tmp_path / "nowhere"])
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(ReportError, match="empty"):
        collect([tmp_path / "empty", str(tmp_path / "none-*")])
    assert issubclass(ReportError, ValueError)


def test_symlinked_run_is_a_row_per_ablation_and_counted_once(tmp_path: Path) -> None:
    root = tmp_path / "ablations"
    shared = make_run(root / "targets" / "hard" / "s0", seed=0, results={"zeroshot": {"top1": 30.0}},
                      meta={"ablation": "targets", "variant": "hard", "label": "CLIP", "order": 0, "baseline": "hard",
                            "factors": {"method": "CLIP"}})  # fmt: skip
    make_run(root / "disentangle" / "soft" / "s0", seed=0, results={"zeroshot": {"top1": 35.0}},
             meta={"ablation": "disentangle", "variant": "soft", "order": 1, "baseline": "infonce"})  # fmt: skip
    (root / "disentangle" / "infonce").mkdir()
    os.symlink(shared, root / "disentangle" / "infonce" / "s0")
    (root / "targets" / "hard_copy").mkdir()
    os.symlink(shared, root / "targets" / "hard_copy" / "s0")  # same real run, same ablation: counted once
    frame = collect([root, root / "targets"])  # overlapping inputs as well
    top1 = frame[frame["key"] == "zeroshot/top1"].set_index(["ablation", "variant"])["value"].to_dict()
    assert top1 == {("disentangle", "soft"): 35.0, ("disentangle", "infonce"): 30.0, ("targets", "hard"): 30.0}
    assert set(frame.loc[frame["ablation"] == "disentangle", "baseline"]) == {"infonce"}
    via_link = frame[(frame["ablation"] == "disentangle") & (frame["variant"] == "infonce")].iloc[0]
    assert via_link["label"] == "infonce" and math.isnan(via_link["order"])  # not the targets ablation's metadata


def test_curves_from_metrics_jsonl(tmp_path: Path) -> None:
    runs = make_grid(tmp_path, n_ablations=1, n_variants=2, seeds=(0, 1))
    with (runs[0] / "metrics.jsonl").open("a") as fh:
        fh.write("{broken\n")
    (runs[-1] / "metrics.jsonl").unlink()
    frame = curves([tmp_path])
    loss = frame[(frame["kind"] == "train") & (frame["key"] == "loss")]
    assert len(loss) == 3 * 3  # three runs left with curves, three steps each
    assert loss.set_index(["variant", "seed", "step"])["value"][("v1", 0, 20)] == pytest.approx(5.0 - 0.2 + 1)
    evals = frame[frame["kind"] == "eval"]
    assert set(evals["key"]) == {"zeroshot/top1"} and set(evals["step"]) == {30}
    assert list(frame.columns) == ["ablation", "variant", "label", "seed", "run", "order", "kind", "step", "key",
                                   "value", "run_dir"]  # fmt: skip


def test_symlinked_run_uses_the_variant_folder_metadata(tmp_path: Path) -> None:
    shared = make_run(tmp_path / "targets" / "hard" / "s0", seed=0, results={"zeroshot": {"top1": 30.0}},
                      meta={"ablation": "targets", "variant": "hard", "label": "CLIP", "order": 0})  # fmt: skip
    variant_dir = tmp_path / "disentangle" / "infonce"
    variant_dir.mkdir(parents=True)
    (variant_dir / "ablation.json").write_text(
        '{"ablation": "disentangle", "variant": "infonce", "label": "InfoNCE", "order": 0, "baseline": "infonce"}')
    os.symlink(shared, variant_dir / "s0")
    collection = load_runs([tmp_path / "disentangle"])
    (run,) = collection.runs
    assert (run.ablation, run.variant, run.label, run.order, run.baseline) == ("disentangle", "infonce", "InfoNCE",
                                                                                0.0, "infonce")  # fmt: skip
    assert run.meta_source == "variant ablation.json"
