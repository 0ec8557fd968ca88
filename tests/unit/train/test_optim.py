"""AdamW parameter groups (no decay on norms, biases, positional embeddings, logit scale) and the clamp."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from softclip.config import ModelConfig, OptimConfig, RoiConfig
from softclip.models import build_model
from softclip.train.optim import build_optimizer, clamp_logit_scale, fused_supported, param_groups


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    roi = RoiConfig(aggregation="mhsa", width=32, heads=2)
    return build_model(ModelConfig(name="tiny-vit-32"), roi, roi_in_dim=16)[0]


def _names(groups: list[dict], key: str) -> set[str]:
    return {n for g in groups if g["name"] == key for n in g["param_names"]}


def test_no_decay_on_norms_biases_positional_and_logit_scale(model: nn.Module) -> None:
    groups = param_groups(model, weight_decay=0.1)
    decay, no_decay = _names(groups, "decay"), _names(groups, "no_decay")
    assert decay.isdisjoint(no_decay)
    assert decay | no_decay == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "clip.logit_scale" in no_decay
    assert "clip.positional_embedding" in no_decay and "clip.visual.positional_embedding" in no_decay
    assert "clip.visual.class_embedding" in no_decay
    for name in no_decay:
        assert "bias" in name or "ln" in name or "norm" in name or "embedding" in name or "logit" in name, (
            name
        )
    assert all(not n.endswith(".bias") and ".ln_" not in n for n in decay)
    # weight matrices decay, the token table included
    assert "clip.token_embedding.weight" in decay
    assert "clip.visual.transformer.resblocks.0.attn.in_proj_weight" in decay
    assert "clip.visual.conv1.weight" in decay
    wd = {g["name"]: g["weight_decay"] for g in groups}
    assert wd == {"decay": 0.1, "no_decay": 0.0}


def test_norm_modules_never_decay() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    groups = param_groups(net, 0.5)
    assert _names(groups, "decay") == {"0.weight", "3.weight"}
    assert _names(groups, "no_decay") == {"0.bias", "1.weight", "1.bias", "2.weight", "2.bias"}


def test_frozen_parameters_are_left_out() -> None:
    net = nn.Linear(3, 3)
    net.weight.requires_grad_(False)
    groups = param_groups(net, 0.1)
    assert [g["name"] for g in groups] == ["no_decay"]


def test_build_optimizer_uses_the_groups(model: nn.Module) -> None:
    section = OptimConfig(lr=1e-3, weight_decay=0.2, beta1=0.8, beta2=0.95, eps=1e-7)
    opt = build_optimizer(section, model, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.2]
    assert {(g["lr"], g["betas"], g["eps"]) for g in opt.param_groups} == {(1e-3, (0.8, 0.95), 1e-7)}
    assert opt.defaults["fused"] is (True if fused_supported(torch.device("cpu")) else None)
    plain = build_optimizer(section.model_copy(update={"fused": False}), model, torch.device("cpu"))
    assert plain.defaults["foreach"] is True and not plain.defaults["fused"]


def test_clamp_logit_scale() -> None:
    p = nn.Parameter(torch.tensor(math.log(1000.0)))
    clamp_logit_scale(p, 100.0)
    assert p.item() == pytest.approx(math.log(100.0))
    q = nn.Parameter(torch.tensor(-1.0))
    clamp_logit_scale(q, 100.0)
    assert q.item() == 0.0
