"""The fused path against the reference (the executable definition): loss, every term and the gradients of
U, V and s, float64, for every target × divergence × pairing, with and without masks, both one-hot rules,
N = 1, 2 and 7; plus the per-direction contract on rectangular (distributed) blocks."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch
import torch.nn.functional as F

from softclip.objective import DIVERGENCES, SideInputs, SoftCLIPObjective, reference
from softclip.objective.losses import direction_terms as fused_terms
from softclip.objective.losses import off_diagonal_mass
from softclip.objective.reference import DIVERGENCE_ROWS, ONE_HOT_RULES, DirectionSpec, off_diagonal_rows
from softclip.objective.reference import direction_terms as reference_terms
from softclip.objective.scoring import IMPLS
from tests.unit.objective.scenes import TARGET_PAIRINGS, scene_kwargs

KEYS = ("loss", "nce_loss", "soft_loss", "re_loss", "roi_loss", "pred_pos_mass", "target_entropy")


def _inputs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    v = F.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    scale = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)
    a = torch.randn(n, 4, generator=g, dtype=torch.float64)
    b = torch.randn(n, 4, generator=g, dtype=torch.float64)
    masks = (torch.arange(n) % 3 != 1, torch.arange(n) % 4 != 2)
    return u, v, scale, a, b, masks


def _run(impl: str, kwargs: dict, n: int, masked: bool):
    u, v, scale, a, b, masks = _inputs(n)
    side = a.clone().requires_grad_()  # a learning aggregator: the ROI term on
    scenes = scene_kwargs(kwargs["target"], n)
    out = SoftCLIPObjective(impl=impl, **kwargs)(u, v, scale, side=SideInputs(side, b, *(masks if masked else (None, None)), **scenes))
    grads = torch.autograd.grad(out["loss"], (u, v, scale, side))
    return out, grads


def test_the_reference_is_plain_autograd():
    """The definition carries none of the fast path's concerns: no scratch blocks, no ``out=``, nothing in place."""
    tree = ast.parse(inspect.getsource(reference))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not [k.arg for c in calls for k in c.keywords if k.arg == "out"]
    in_place = [c.func.attr for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr.endswith("_")]
    assert not in_place, in_place
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "Workspace" not in names and "softclip.objective.losses" not in modules


def test_every_divergence_has_a_reference_formula():
    assert sorted(DIVERGENCE_ROWS) == DIVERGENCES.names()
    assert IMPLS.names() == ["fused", "reference"]


@pytest.mark.parametrize("target,pairing", TARGET_PAIRINGS)
@pytest.mark.parametrize("divergence", DIVERGENCES.names())
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_fused_equals_reference(target, divergence, pairing, masked, n):
    kwargs = dict(target=target, divergence=divergence, pairing=pairing, beta=0.4, tau=0.3, re_weight=0.7,
                  roi_weight=0.3, one_hot_rows=ONE_HOT_RULES[n % 2])  # fmt: skip
    fused, fused_grads = _run("fused", kwargs, n, masked)
    ref, ref_grads = _run("reference", kwargs, n, masked)
    for key in KEYS:
        if key in ref:
            torch.testing.assert_close(fused[key].detach(), ref[key].detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip(fused_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES.names())
@pytest.mark.parametrize("rule", ONE_HOT_RULES)
@pytest.mark.parametrize("shape,offset", [((3, 8), 5), ((4, 8), 0), ((1, 3), 2)])
def test_direction_terms_on_rectangular_blocks(divergence, rule, shape, offset):
    """A rank's block (local rows, global columns, offset): same values and logit gradients."""
    g = torch.Generator().manual_seed(4)
    z = (3 * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()
    log_y = torch.log_softmax(2 * torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)
    log_y[0] = float("-inf")
    log_y[0, offset] = 0.0  # a one-hot row
    if shape[0] > 1:
        log_y[1, (offset + 1) % shape[1]] = float("-inf")  # a masked column
    keep = off_diagonal_rows(log_y, offset)
    saved = log_y.clone()
    assert torch.equal(off_diagonal_mass(log_y, offset), keep)  # the fused path's in-place twin
    assert torch.equal(log_y, saved)  # ... restores the block
    spec = DirectionSpec(offset, divergence, 1e-8, rule, nce_weight=0.5, soft_weight=0.5, re_weight=0.3)
    outs = [fn(z, log_y.clone(), keep, spec) for fn in (fused_terms, reference_terms)]
    for got, want in zip(*outs, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-12, atol=1e-12)
    (g_fused,), (g_ref,) = (torch.autograd.grad(o[0], z) for o in outs)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("divergence,re_divergence", [(d, r) for d in DIVERGENCES.names() for r in DIVERGENCES.names() if d != r])
@pytest.mark.parametrize("target", ["selfsim", "oracle"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_equals_reference_with_a_separate_re_divergence(divergence, re_divergence, target, masked):
    kwargs = dict(target=target, divergence=divergence, re_divergence=re_divergence, beta=0.4, tau=0.3,
                  re_weight=0.7, roi_weight=0.3)  # fmt: skip
    fused, fused_grads = _run("fused", kwargs, 7, masked)
    ref, ref_grads = _run("reference", kwargs, 7, masked)
    for key in KEYS:
        torch.testing.assert_close(fused[key].detach(), ref[key].detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip(fused_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES.names())
def test_re_divergence_changes_only_the_relation_enhanced_term(divergence):
    """None is ``divergence`` exactly; another name leaves the InfoNCE and soft terms as they are."""
    base = dict(target="selfsim", divergence=divergence, beta=0.4, tau=0.3, re_weight=0.7)
    same, _ = _run("fused", base, 7, False)
    named, _ = _run("fused", {**base, "re_divergence": divergence}, 7, False)
    other = next(d for d in DIVERGENCES.names() if d != divergence)
    moved, _ = _run("fused", {**base, "re_divergence": other}, 7, False)
    for key in KEYS:
        assert torch.equal(same[key], named[key]), key
    assert torch.equal(same["soft_loss"], moved["soft_loss"]) and torch.equal(same["nce_loss"], moved["nce_loss"])
    assert not torch.equal(same["re_loss"], moved["re_loss"])


@pytest.mark.parametrize("precision", [0.0, 0.5, "share"])
@pytest.mark.parametrize("divergence", DIVERGENCES.names())
def test_fused_equals_reference_for_the_oracle_precision_knob(precision, divergence):
    kwargs = dict(target="oracle", divergence=divergence, oracle_precision=precision, beta=0.4, re_weight=0.7,
                  roi_weight=0.3)  # fmt: skip
    fused, fused_grads = _run("fused", kwargs, 7, True)
    ref, ref_grads = _run("reference", kwargs, 7, True)
    for key in KEYS:
        torch.testing.assert_close(fused[key].detach(), ref[key].detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip(fused_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
