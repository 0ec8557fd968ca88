"""Periodic evaluation and ``--no-eval``: the suite a run evaluates during training, the light subsets
(``max_per_class``, ``max_images``) and that ``--no-eval`` neither evaluates nor checks evaluation datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import softclip.train
from softclip import cli
from softclip.config import load_config
from softclip.evaluation.hooks import periodic_suite
from softclip.evaluation.retrieval import RetrievalOptions
from softclip.evaluation.retrieval import load as load_retrieval
from softclip.evaluation.suite import SuiteError, plan_suite, read_suite
from softclip.evaluation.zeroshot import ZeroShotOptions
from softclip.evaluation.zeroshot import load as load_zeroshot

ROOT = Path(__file__).resolve().parents[3]
BASE = str(ROOT / "ablations" / "base.yaml")
PAPER_VARS = ("IMAGENET_ROOT", "FLICKR30K_ROOT", "COCO_ROOT", "REVISITOP_ROOT", "COPYDAYS_ROOT",
              "COPYDAYS_DISTRACTORS", "COPYDAYS_WHITENING")  # fmt: skip


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``softclip.train.train`` replaced by a recorder; the paper suite's variables unset."""
    seen: dict = {}

    def fake_train(cfg, run_dir=None, overwrite=False, evaluate=None, preflight=None):
        seen.update(cfg=cfg, evaluate=evaluate, preflight=preflight)
        return Path(run_dir)

    monkeypatch.setattr(softclip.train, "train", fake_train)
    for var in PAPER_VARS:
        monkeypatch.delenv(var, raising=False)
    return seen


def test_no_eval_means_no_periodic_evaluation_and_no_preflight(captured, tmp_path):
    argv = ["train", BASE, "--profile", "paper", "--run-dir", str(tmp_path / "r"), "--no-eval", "model.name=tiny-rn"]
    assert cli.main(argv) == 0
    assert captured["cfg"].train.eval_every > 0  # the paper profile evaluates periodically ...
    assert captured["evaluate"] is None and captured["preflight"] is None  # ... but not under --no-eval


def test_without_no_eval_the_preflight_checks_both_suites(captured, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_print_results", lambda results: None)
    monkeypatch.setattr("softclip.evaluation.evaluate_checkpoint", lambda *a, **k: {})
    argv = ["train", BASE, "--profile", "paper", "--run-dir", str(tmp_path / "r"), "model.name=tiny-rn"]
    assert cli.main(argv) == 0
    assert captured["evaluate"] is not None
    with pytest.raises(SuiteError, match="IMAGENET_ROOT"):
        captured["preflight"]()


def test_paper_profile_evaluates_the_light_suite_periodically():
    cfg = load_config(BASE, profile="paper")
    assert periodic_suite(cfg) == "eval/paper_periodic.yaml" and cfg.eval.suite == "eval/paper.yaml"
    spec, _ = read_suite(ROOT / periodic_suite(cfg))
    full, _ = read_suite(ROOT / cfg.eval.suite)
    used = {b.path for b in spec.benchmarks.values()}
    assert used <= {b.path for b in full.benchmarks.values()}  # no dataset the full suite does not need
    assert load_config(BASE, profile="quick").eval.periodic_suite is None


def test_paper_suite_header_lists_every_variable_it_uses():
    text = (ROOT / "eval" / "paper.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    spec, _ = read_suite(ROOT / "eval" / "paper.yaml")
    assert set(spec.roots) == set(PAPER_VARS)
    for var in spec.roots:
        assert f"{var}=" in header, var


def test_max_per_class_keeps_the_first_images_of_each_class(smoke_root):
    full = load_zeroshot(smoke_root / "zeroshot", ZeroShotOptions())
    light = load_zeroshot(smoke_root / "zeroshot", ZeroShotOptions(max_per_class=1))
    classes = np.unique(full.labels)
    assert sorted(light.labels.tolist()) == classes.tolist()
    for c in classes:
        assert light.paths[int(np.flatnonzero(light.labels == c)[0])] == full.paths[int(np.flatnonzero(full.labels == c)[0])]


def test_max_images_keeps_the_first_images_and_their_captions(smoke_root):
    full = load_retrieval(smoke_root / "retrieval", RetrievalOptions())
    light = load_retrieval(smoke_root / "retrieval", RetrievalOptions(max_images=3))
    assert light.image_paths == full.image_paths[:3] and light.relevance is None
    want = [full.captions[t] for i in range(3) for t in full.image_to_texts[i]]
    assert sorted(light.captions) == sorted(want)
    for i, texts in enumerate(light.image_to_texts):
        assert [light.captions[t] for t in texts] == [full.captions[t] for t in full.image_to_texts[i]]
        assert all(light.text_to_image[t] == i for t in texts)


def test_periodic_suite_plans_against_a_data_root(tmp_path, monkeypatch):
    for var in ("IMAGENET_ROOT", "COCO_ROOT"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    plans = plan_suite(*read_suite(ROOT / "eval" / "paper_periodic.yaml"), tmp_path)
    assert [p.name for p in plans] == ["imagenet_light", "coco_light"]
    assert plans[0].options.templates == "imagenet7" and plans[1].options.max_images == 1000
