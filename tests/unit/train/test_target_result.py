"""``eval/target.json``: the step-averaged target precision written in the evaluation results' format, read by
the report as ``target/precision`` etc., and neither a benchmark a finished run must hold nor one it lacks."""

from __future__ import annotations

import json
from pathlib import Path

from softclip import runfiles
from softclip.evaluation.harness import RESULT_KEYS
from softclip.report.discover import read_results
from softclip.train.rundir import expected_benchmarks, is_finished
from softclip.train.target_result import write_target_result

SUITE = "eval/synthetic.yaml"


def _metrics(run: Path, with_precision: bool) -> None:
    lines = []
    for step, (i2t, t2i) in zip((10, 20), ((0.2, 0.1), (0.4, 0.3)), strict=True):
        record = {"kind": "train", "step": step, "loss": 1.0}
        if with_precision:
            record.update(target_precision_i2t=i2t, target_precision_t2i=t2i, target_true_share=0.05)
        lines.append(json.dumps(record))
    (run / runfiles.METRICS).write_text("\n".join(lines) + "\n")
    (run / runfiles.META).write_text(json.dumps({"git_sha": "abc"}))


def test_written_in_the_result_format_and_read_by_the_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _metrics(run, with_precision=True)
    path = write_target_result(run, "cfghash", 20)
    record = json.loads(path.read_text())
    assert path == run / "eval" / "target.json" and set(RESULT_KEYS) <= set(record)
    assert (record["benchmark"], record["config_hash"], record["git_sha"]) == ("target", "cfghash", "abc")
    got = read_results(run, [])["target"]
    assert got.keys() == {"precision", "precision_i2t", "precision_t2i", "true_share"}
    assert abs(got["precision"] - 0.25) < 1e-12 and abs(got["true_share"] - 0.05) < 1e-12


def test_runs_without_the_diagnostics_write_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _metrics(run, with_precision=False)
    assert write_target_result(run, "cfghash", 20) is None
    assert not (run / "eval").exists()


def test_finished_run_detection_ignores_the_extra_result(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    _metrics(run, with_precision=True)
    (run / runfiles.DONE).write_text("{}")
    write_target_result(run, "cfghash", 20)
    assert "target" not in expected_benchmarks(SUITE)
    assert not is_finished(run, SUITE)  # the target file alone does not make the evaluation done
    for name in expected_benchmarks(SUITE):
        (run / "eval" / f"{name}.json").write_text(json.dumps({"benchmark": name, "metrics": {"x": 1.0}}))
    assert is_finished(run, SUITE)
