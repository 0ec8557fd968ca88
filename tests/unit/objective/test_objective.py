"""SoftCLIPObjective: the CLIP special case, the value of every term, keys, sides, masks, ROI, autocast, config."""

from __future__ import annotations

import copy
import inspect
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from softclip.config import LossConfig
from softclip.objective import CONTRASTIVES, DIVERGENCES, TARGETS, SideInputs, SoftCLIPObjective
from softclip.objective.scoring import IMPLS
from softclip.schema import MOMENTUM_BETA
from tests.unit.objective.scenes import TARGET_PAIRINGS, bias_kwargs, scene_kwargs

TERMS = ("nce_loss", "soft_loss", "re_loss", "roi_loss")


def _features(n: int = 12, d: int = 8, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    v = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    a = torch.randn(n, 6, generator=g, dtype=dtype)
    b = torch.randn(n, 5, generator=g, dtype=dtype)
    return u, v, a, b


def _grads(loss: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, xs)


@pytest.mark.parametrize("impl", IMPLS.names())
@pytest.mark.parametrize("target", TARGETS.names())
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_clip_special_case_is_open_clip_bit_for_bit(impl, target, beta):
    """β = 0 or λ = µ = 0 (for every target): open_clip's ClipLoss, the loss bit for bit, gradients to rounding."""
    u, v, a, b = _features(n=32, d=16)
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    obj = SoftCLIPObjective(target=target, beta=beta, soft_weight=0.0, re_weight=0.0, impl=impl)
    out = obj(u, v, scale, side=SideInputs(a, b, **scene_kwargs(target, len(u))))
    ref = ClipLoss()(u, v, scale)
    assert torch.equal(out["loss"].detach(), ref.detach())
    for got, want in zip(_grads(out["loss"], u, v, scale), _grads(ref, u, v, scale), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float(out["soft_loss"]) == 0.0 and float(out["re_loss"]) == 0.0


def test_keywords_build_the_loss_section():
    """One default per key, LossConfig's: keyword use builds the section, so both ways mean the same."""
    assert SoftCLIPObjective().config == LossConfig()
    keys = dict(target="label_smoothing", beta=0.2, roi_weight=0.0, impl="reference")
    assert SoftCLIPObjective(**keys).config == LossConfig(**keys)
    assert SoftCLIPObjective("hard", re_weight=0.0).config == LossConfig(target="hard", re_weight=0.0)
    assert SoftCLIPObjective(target="momentum").config.beta == MOMENTUM_BETA  # the section's rule applies too
    assert list(inspect.signature(SoftCLIPObjective.__init__).parameters) == ["self", "config", "keys"]
    with pytest.raises(TypeError, match="not both"):
        SoftCLIPObjective(LossConfig(), beta=0.1)
    with pytest.raises(ValueError, match="tau"):
        SoftCLIPObjective(tau=float("inf"))


def _hand_3x3(rule: str) -> float:
    """soft_loss of the 3×3 case in test_one_hot_rows_hand_computed, written out by hand."""
    p_d = math.exp(2) / (math.exp(2) + 2)  # softmax([2, 0, 0]): the positive
    p_o = 1 / (math.exp(2) + 2)
    log_floor = math.log(1e-8)
    kl = 0.75 * math.log(0.75 / p_d) + 0.25 * math.log(0.25 / p_o)
    rev = p_d * math.log(p_d / 0.75) + p_o * math.log(p_o / 0.25) + p_o * (math.log(p_o) - log_floor)
    one_hot = -math.log(p_d)  # KL(e_i || P) = −log p_ii: that row's InfoNCE
    if rule == "floored":
        one_hot += p_d * math.log(p_d) + 2 * p_o * (math.log(p_o) - log_floor)
    return (2 * (kl + rev) + one_hot) / 3


@pytest.mark.parametrize("impl", IMPLS.names())
@pytest.mark.parametrize("rule", ["forward", "floored"])
def test_one_hot_rows_hand_computed(impl, rule):
    """U = V = I₃, s = 2, label smoothing β = 0.5, sample 2 without regions or tags: rows 0 and 1 are
    [.75, .25, 0] and [.25, .75, 0], row 2 is one-hot; symkl under both one-hot rules."""
    eye = torch.eye(3, dtype=torch.float64)
    mask = torch.tensor([True, True, False])
    obj = SoftCLIPObjective(
        "label_smoothing", beta=0.5, nce_weight=0.0, re_weight=0.0, impl=impl, one_hot_rows=rule
    )
    out = obj(eye, eye, torch.tensor(2.0, dtype=torch.float64), eye, eye, mask, mask)
    assert float(out["soft_loss"]) == pytest.approx(_hand_3x3(rule), rel=1e-12)
    hard = SoftCLIPObjective("hard", re_weight=0.0, impl=impl, one_hot_rows=rule)(eye, eye, torch.tensor(2.0))
    if rule == "forward":  # hard targets are one-hot rows throughout: the soft term is InfoNCE
        torch.testing.assert_close(hard["soft_loss"], hard["nce_loss"])
    else:
        assert float(hard["soft_loss"]) > float(hard["nce_loss"]) + 1.0


def test_roi_logit_scale_shared_or_detached():
    """``shared``: the ROI term trains CLIP's s too; ``detached``: s gets the CLIP terms' gradient only."""
    u, v, a, _ = _features()
    b = torch.randn(len(u), a.shape[1])
    side = a.clone().requires_grad_()
    grads = {}
    for mode, weight in (("shared", 1.0), ("detached", 1.0), ("off", 0.0)):
        scale = torch.tensor(10.0, requires_grad=True)
        obj = SoftCLIPObjective(roi_weight=weight, roi_logit_scale="shared" if mode == "off" else mode)
        (grads[mode],) = _grads(obj(u, v, scale, side, b)["loss"], scale)
    assert torch.equal(grads["detached"], grads["off"]) and not torch.equal(grads["shared"], grads["off"])


@pytest.mark.parametrize("target,pairing", TARGET_PAIRINGS)
@pytest.mark.parametrize("divergence", DIVERGENCES.names())
@pytest.mark.parametrize("contrastive", CONTRASTIVES.names())
def test_registry_every_combination_is_finite_and_gets_gradients(target, divergence, pairing, contrastive):
    u, v, a, b = _features()
    mask = torch.ones(len(u), dtype=torch.bool)
    mask[::3] = False
    scale = torch.tensor(20.0, requires_grad=True)
    re_weight = 0.0 if contrastive == "sigmoid" else 0.5
    obj = SoftCLIPObjective(target, divergence=divergence, pairing=pairing, contrastive=contrastive, re_weight=re_weight)
    side = SideInputs(a, b, mask, ~mask | (torch.arange(len(u)) % 2 == 0), **scene_kwargs(target, len(u)))
    out = obj(u, v, scale, side=side, **bias_kwargs(contrastive, u.dtype))
    assert all(torch.isfinite(x).all() for x in out.values())
    grads = _grads(out["loss"], u, v, scale)
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_keys_weights_and_skipped_terms():
    u, v, a, b = _features()
    scale = torch.tensor(10.0)
    out = SoftCLIPObjective()(u, v, scale, a, b)
    assert set(TERMS) | {"loss", "target_entropy", "target_pos_mass", "pred_pos_mass", "logit_scale"} <= set(
        out
    )
    assert all(not k.endswith("_loss") for k in out if k not in TERMS and k != "loss")
    expected = out["nce_loss"] + out["soft_loss"] + 0.5 * out["re_loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    only_soft = SoftCLIPObjective(nce_weight=0.0, re_weight=0.0)(u, v, scale, a, b)
    assert float(only_soft["nce_loss"]) == 0.0 and float(only_soft["re_loss"]) == 0.0
    torch.testing.assert_close(only_soft["soft_loss"], out["soft_loss"])
    assert 0 < float(out["target_pos_mass"]) < 1 and float(out["target_entropy"]) > 0
    assert float(out["logit_scale"]) == 10.0


@pytest.mark.parametrize("divergence", DIVERGENCES.names())
def test_hard_target_soft_loss_is_the_infonce(divergence):
    u, v, a, b = _features()
    out = SoftCLIPObjective("hard", divergence=divergence, re_weight=0.0)(u, v, torch.tensor(14.0), a, b)
    torch.testing.assert_close(out["soft_loss"], out["nce_loss"])
    assert float(out["target_entropy"]) == 0.0 and float(out["target_pos_mass"]) == 1.0


def test_own_features_when_no_side_is_given_and_targets_carry_no_gradient():
    u, v, a, b = _features()
    scale = torch.tensor(10.0)
    obj = SoftCLIPObjective(beta=0.5, roi_weight=0.0)
    own = obj(u, v, scale)
    given = obj(u, v, scale, u.detach().clone(), v.detach().clone())
    torch.testing.assert_close(own["loss"], given["loss"])
    side = a.clone().requires_grad_()
    out = obj(u, v, scale, side, b)
    (grad,) = torch.autograd.grad(out["loss"], side, allow_unused=True)
    assert grad is None  # the ROI term is off (roi_weight = 0): A only shapes the targets


def test_roi_infonce_over_samples_with_both_sides():
    u, v, a, _ = _features()
    b = torch.randn(len(u), a.shape[1])
    ma = torch.ones(len(u), dtype=torch.bool)
    mb = ma.clone()
    ma[2], mb[5] = False, False
    side = a.clone().requires_grad_()
    scale, roi_scale = torch.tensor(10.0), torch.tensor(7.0)
    obj = SoftCLIPObjective(roi_weight=0.3)
    out = obj(u, v, scale, side, b, ma, mb, roi_logit_scale=roi_scale)
    keep = ma & mb
    logits = roi_scale * F.normalize(a[keep], dim=1) @ F.normalize(b[keep], dim=1).T
    labels = torch.arange(int(keep.sum()))
    ref = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert float(out["roi_loss"]) == pytest.approx(float(ref), rel=1e-5)
    (grad,) = torch.autograd.grad(out["loss"], side)
    assert grad[keep].abs().sum() > 0 and (grad[~keep] == 0).all()
    frozen = obj(u, v, scale, a, b, ma, mb)  # an aggregator without gradient: no ROI term
    assert float(frozen["roi_loss"]) == 0.0
    with pytest.raises(ValueError, match="one dimension"):
        obj(u, v, scale, side, torch.randn(len(u), 3))


def test_masked_samples_are_left_out_of_the_relation_term():
    u, v, a, b = _features(n=6)
    all_off = torch.zeros(6, dtype=torch.bool)
    out = SoftCLIPObjective(re_weight=1.0)(u, v, torch.tensor(10.0), a, b, all_off, all_off)
    assert float(out["re_loss"]) == 0.0 and float(out["re_kept_fraction"]) == 0.0
    assert float(out["target_pos_mass"]) == 1.0
    assert torch.isfinite(out["loss"])


def test_autocast_computes_the_logits_in_float32():
    u, v, a, b = _features()
    scale = torch.tensor(14.0)
    obj = SoftCLIPObjective()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj(u.bfloat16(), v.bfloat16(), scale, a.bfloat16(), b.bfloat16())
    assert out["loss"].dtype == torch.float32
    ref = obj(u.bfloat16().float(), v.bfloat16().float(), scale, a.bfloat16().float(), b.bfloat16().float())
    torch.testing.assert_close(out["loss"], ref["loss"])


def test_no_grad_and_repeated_calls_agree():
    u, v, a, b = _features()
    obj = SoftCLIPObjective()
    first = obj(u, v, torch.tensor(10.0), a, b)
    with torch.no_grad():
        second = obj(u, v, torch.tensor(10.0), a, b)
    for k in first:
        torch.testing.assert_close(first[k].detach(), second[k])
    clone = pickle.loads(pickle.dumps(copy.deepcopy(obj)))
    torch.testing.assert_close(clone(u, v, torch.tensor(10.0), a, b)["loss"], first["loss"])


def test_from_config_reads_the_loss_section_and_validates():
    cfg = LossConfig(
        target="label_smoothing", beta=0.2, tau=0.5, divergence="kl", pairing="cross", re_weight=0.0
    )
    obj = SoftCLIPObjective.from_config(cfg)
    assert obj.config is cfg and SoftCLIPObjective(cfg).config is cfg
    c = obj.config
    assert (c.target, c.beta, c.tau, c.divergence, c.pairing) == (
        "label_smoothing",
        0.2,
        0.5,
        "kl",
        "cross",
    )
    assert (c.re_weight, c.roi_weight) == (0.0, cfg.roi_weight)
    with pytest.raises(ValueError, match="hard"):
        SoftCLIPObjective(target="hrad")
    with pytest.raises(ValueError, match="beta"):
        SoftCLIPObjective(beta=1.5)
    with pytest.raises(ValueError, match="tau"):
        SoftCLIPObjective(tau=0.0)
    with pytest.raises(ValueError, match="re_weight"):
        SoftCLIPObjective(re_weight=-1.0)
    u, v, _, _ = _features()
    with pytest.raises(ValueError, match="image_side_mask"):
        obj(u, v, torch.tensor(1.0), image_side_mask=torch.ones(3, dtype=torch.bool))
