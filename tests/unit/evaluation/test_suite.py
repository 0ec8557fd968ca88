"""Suite schema validation, variable substitution and path checks; every YAML in eval/ validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from softclip.data.badsamples import DataError
from softclip.evaluation.suite import SuiteError, plan_suite, read_suite

EVAL_DIR = Path(__file__).resolve().parents[3] / "eval"


def suite(**over):
    base = {"name": "t", "benchmarks": {"zs": {"evaluator": "zeroshot", "path": "zeroshot"}}}
    base.update(over)
    return base


@pytest.mark.parametrize("path", sorted(EVAL_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_suite_file_validates_and_opens_with_a_comment(path):
    spec, _ = read_suite(path)
    assert spec.benchmarks
    assert path.read_text().startswith("#")


def test_shipped_suites_have_the_paper_and_synthetic_benchmarks():
    assert set(read_suite(EVAL_DIR / "synthetic.yaml")[0].benchmarks) == {"zeroshot", "retrieval", "instance", "copydays"}
    paper = read_suite(EVAL_DIR / "paper.yaml")[0]
    assert {"imagenet", "flickr30k", "coco", "roxford5k", "rparis6k", "copydays"} <= set(paper.benchmarks)


def test_unknown_top_level_key_names_it_and_the_closest():
    with pytest.raises(SuiteError, match=r"unknown key 'batchsize'.*'batch_size'"):
        read_suite(suite(batchsize=3))


def test_unknown_benchmark_key_and_option_are_named():
    bad = suite(benchmarks={"zs": {"evaluator": "zeroshot", "path": "x", "opts": {}}})
    with pytest.raises(SuiteError, match=r"benchmarks\.zs\.opts.*'options'"):
        read_suite(bad)
    bad = suite(benchmarks={"zs": {"evaluator": "zeroshot", "path": "x", "options": {"templtes": "auto"}}})
    with pytest.raises(SuiteError, match=r"benchmarks\.zs\.options\.templtes.*'templates'"):
        read_suite(bad)


def test_wrong_types_name_the_key():
    with pytest.raises(SuiteError, match=r"batch_size"):
        read_suite(suite(batch_size=0))
    bad = suite(benchmarks={"r": {"evaluator": "retrieval", "path": "x", "options": {"ks": "many"}}})
    with pytest.raises(SuiteError, match=r"benchmarks\.r\.options\.ks"):
        read_suite(bad)
    with pytest.raises(SuiteError, match=r"search\.ivf_nprobe"):
        read_suite(suite(search={"ivf_nprobe": -1}))


def test_unknown_evaluator_and_bad_benchmark_name():
    with pytest.raises(SuiteError, match=r"benchmarks\.zs\.evaluator='zeroshoot'.*'zeroshot'"):
        read_suite(suite(benchmarks={"zs": {"evaluator": "zeroshoot", "path": "x"}}))
    with pytest.raises(SuiteError, match=r"benchmarks"):
        read_suite(suite(benchmarks={"Bad-Name": {"evaluator": "zeroshot", "path": "x"}}))


def test_missing_suite_file():
    with pytest.raises(SuiteError, match="not found"):
        read_suite("eval/nope.yaml")


def test_variables_environment_wins_and_unset_is_named(tmp_path, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "file").mkdir()
    spec, src = read_suite(suite(roots={"ZS_ROOT": str(tmp_path / "file")},
                                 benchmarks={"zs": {"evaluator": "zeroshot", "path": "${ZS_ROOT}"}}))  # fmt: skip
    monkeypatch.delenv("ZS_ROOT", raising=False)
    assert plan_suite(spec, src, None)[0].path == tmp_path / "file"
    monkeypatch.setenv("ZS_ROOT", str(tmp_path / "env"))
    assert plan_suite(spec, src, None)[0].path == tmp_path / "env"
    monkeypatch.delenv("ZS_ROOT")
    spec2, _ = read_suite(suite(benchmarks={"zs": {"evaluator": "zeroshot", "path": "${ZS_ROOT}/val"}}))
    with pytest.raises(SuiteError, match=r"\$\{ZS_ROOT\}.*export ZS_ROOT"):
        plan_suite(spec2, src, None)


def test_missing_path_names_the_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGENET_ROOT", str(tmp_path / "nowhere"))
    spec, src = read_suite(EVAL_DIR / "paper.yaml")
    with pytest.raises(DataError, match=r"nowhere.*IMAGENET_ROOT"):
        plan_suite(spec, src, None, benchmarks=["imagenet"])
    with pytest.raises(SuiteError, match=r"no benchmark 'imagnet'"):
        plan_suite(spec, src, None, benchmarks=["imagnet"])


def test_relative_paths_resolve_against_the_data_root(smoke_root):
    spec, src = read_suite(EVAL_DIR / "synthetic.yaml")
    plans = plan_suite(spec, src, smoke_root)
    assert [p.path for p in plans] == [smoke_root / n for n in ("zeroshot", "retrieval", "instance", "copydays")]
    with pytest.raises(DataError, match="relative to the data root"):
        plan_suite(spec, src, smoke_root / "missing")
