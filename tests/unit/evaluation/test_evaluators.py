"""Evaluator helpers: PCA-whitening, the logit-scale contract, template choice, per-level copy-detection keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from softclip.data.badsamples import DataError
from softclip.evaluation.copydays import _block_maps, apply_whitening, learn_whitening
from softclip.evaluation.retrieval import logit_scale
from softclip.evaluation.templates import IMAGENET_TEMPLATES
from softclip.evaluation.zeroshot import templates_for


def test_whitening_gives_identity_covariance_on_its_training_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
    mean, proj = learn_whitening(x, power=0.5)
    y = (x - mean) @ proj.T
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(6), atol=1e-8)
    out = apply_whitening(x[:4], mean, proj)
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_whitening_keeps_at_most_rank_many_components():
    x = np.random.default_rng(1).normal(size=(5, 16))
    _, proj = learn_whitening(x)
    assert proj.shape == (4, 16)  # n - 1: the centred sample covariance has rank 4
    assert learn_whitening(x, dim=2)[1].shape == (2, 16)
    with pytest.raises(ValueError):
        learn_whitening(x[:1])


def test_logit_scale_contract():
    class Soft:
        logit_scale = torch.tensor(20.0)  # SoftCLIPModel: already the multiplier

    class Raw:
        logit_scale = torch.nn.Parameter(torch.tensor(np.log(20.0), dtype=torch.float32))  # open_clip: log

    assert logit_scale(Soft()) == pytest.approx(20.0)
    assert logit_scale(Raw()) == pytest.approx(20.0, rel=1e-5)
    assert logit_scale(object()) is None


class _Data:
    def __init__(self, templates, root=Path(".")):
        self.templates, self.root = templates, root


def test_template_choices(tmp_path):
    assert len(IMAGENET_TEMPLATES) == 80 and all("{}" in t for t in IMAGENET_TEMPLATES)
    assert templates_for(_Data(["a {}."]), "auto") == ["a {}."]
    assert templates_for(_Data(None), "auto") == list(IMAGENET_TEMPLATES)
    assert templates_for(_Data(None), "single") == ["a photo of a {}."]
    (tmp_path / "t.txt").write_text("x {c} y\nz {}\n")
    assert templates_for(_Data(None, tmp_path), "t.txt") == ["x {} y", "z {}"]
    with pytest.raises(DataError, match="no templates.txt"):
        templates_for(_Data(None), "dataset")
    with pytest.raises(DataError, match="neither"):
        templates_for(_Data(None, tmp_path), "missing.txt")


def test_copydays_block_keys_per_level():
    topk = np.array([[0, 1], [1, 0], [2, 0]])
    out = _block_maps("crops", topk, np.array([0, 0, 2]), ["10", "10", "5-b"])
    assert out == pytest.approx({"map_crops": 100 * (1 + 0.25 + 1) / 3, "map_crops_10": 100 * 1.25 / 2,
                                 "map_crops_5_b": 100.0})  # fmt: skip
