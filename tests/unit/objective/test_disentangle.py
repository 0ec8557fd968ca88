"""Disentangled negatives (relation-enhanced loss): both implementations against a float64 Python-loop
reference, invariance to the diagonal logits, row exclusion, rectangular (distributed) blocks, dominant
diagonals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from softclip.objective import DIVERGENCES, SideView, SoftCLIPObjective, build_targets
from softclip.objective.reference import DirectionSpec, off_diagonal_rows
from softclip.objective.scoring import IMPLS


def relation_enhanced_sums(z, y, name, offset=0, impl="fused", one_hot_rows="floored"):
    """(sum over kept rows of D(Ỹ || P̃), number of kept rows) through ``impl``'s direction terms."""
    log_y = torch.log(y)
    keep = off_diagonal_rows(log_y, offset)
    spec = DirectionSpec(offset, name, 1e-8, one_hot_rows, nce_weight=0.0, re_weight=1.0)
    return IMPLS.get(impl)().terms(z, log_y, keep, spec)[0], keep.sum()


def slow_relation_enhanced(z: torch.Tensor, y: torch.Tensor, offset: int, name: str) -> tuple[float, int]:
    """Sum over kept rows of D(Ỹ || P̃) and the number of kept rows, with plain Python floats."""
    total, kept = 0.0, 0
    z, y = z.tolist(), y.tolist()
    for i, (z_row, y_row) in enumerate(zip(z, y, strict=True)):
        cols = [j for j in range(len(z_row)) if j != offset + i]
        mass = sum(y_row[j] for j in cols)
        if mass <= 0:
            continue
        yt = [y_row[j] / mass for j in cols]
        zo = [z_row[j] for j in cols]
        top = max(zo)
        lse = top + math.log(sum(math.exp(t - top) for t in zo))
        lp = [t - lse for t in zo]
        kl = sum(a * (math.log(a) - b) for a, b in zip(yt, lp, strict=True) if a > 0)
        reverse = sum(math.exp(b) * (b - math.log(max(a, 1e-8))) for a, b in zip(yt, lp, strict=True))
        ce = -sum(a * b for a, b in zip(yt, lp, strict=True))
        total += {"kl": kl, "symkl": kl + reverse, "ce": ce}[name]
        kept += 1
    return total, kept


def _block(n_local: int, n_global: int, seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n_local, n_global, generator=g, dtype=torch.float64)
    y = torch.softmax(2 * torch.randn(n_local, n_global, generator=g, dtype=torch.float64), dim=1)
    return z, y


def _with_special_rows(y: torch.Tensor, offset: int) -> torch.Tensor:
    y = y.clone()
    y[0] = 0.0
    y[0, offset] = 1.0  # one-hot row: no off-diagonal mass, left out
    y[1, (offset + 2) % y.shape[1]] = 0.0  # a masked column
    return y / y.sum(1, keepdim=True)


@pytest.mark.parametrize("impl", IMPLS.names())
@pytest.mark.parametrize("name", DIVERGENCES.names())
@pytest.mark.parametrize("shape,offset", [((6, 6), 0), ((3, 8), 5), ((4, 8), 0), ((2, 5), 2)])
def test_matches_the_python_loop_reference(impl, name, shape, offset):
    z, y = _block(*shape)
    y = _with_special_rows(y, offset)
    total, kept = relation_enhanced_sums(z, y, name, offset, impl)
    ref_total, ref_kept = slow_relation_enhanced(z, y, offset, name)
    assert int(kept) == ref_kept == shape[0] - 1
    assert float(total) == pytest.approx(ref_total, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("impl", IMPLS.names())
@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_invariant_to_the_diagonal_logits(impl, name):
    z, y = _block(5, 5)
    z = z.requires_grad_()
    total, _ = relation_enhanced_sums(z, y, name, impl=impl)
    (grad,) = torch.autograd.grad(total, z)
    assert (grad.diagonal() == 0).all()
    shifted = z.detach().clone()
    shifted.diagonal().add_(torch.tensor([40.0, -40.0, 7.0, 0.5, -3.0], dtype=torch.float64))
    shifted.requires_grad_()
    total2, _ = relation_enhanced_sums(shifted, y, name, impl=impl)
    (grad2,) = torch.autograd.grad(total2, shifted)
    assert float(total2.detach()) == pytest.approx(float(total.detach()), rel=1e-12)
    torch.testing.assert_close(grad2, grad)


@pytest.mark.parametrize("impl", IMPLS.names())
def test_dominant_diagonal_at_large_logit_scale(impl):
    """Off-diagonal probabilities underflow in float32 at s = 300; log space keeps the term exact."""
    z, y = _block(6, 6, seed=3, scale=1.0)
    z = 300.0 * torch.tanh(z)
    z.diagonal().add_(400.0)
    total, kept = relation_enhanced_sums(z.float(), y.float(), "symkl", impl=impl)
    ref_total, ref_kept = slow_relation_enhanced(z, y, 0, "symkl")
    assert int(kept) == ref_kept
    assert float(total) == pytest.approx(ref_total, rel=1e-4)


@pytest.mark.parametrize("impl", IMPLS.names())
def test_no_kept_rows_gives_zero_not_nan(impl):
    z = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    total, kept = relation_enhanced_sums(z, torch.eye(4, dtype=torch.float64), "symkl", impl=impl)
    assert float(total.detach()) == 0.0 and int(kept) == 0
    (grad,) = torch.autograd.grad(total, z)
    assert (grad == 0).all()


def _objective_inputs(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)
    v = F.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)
    a = torch.randn(n, 4, generator=g, dtype=torch.float64)
    b = torch.randn(n, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(n, dtype=torch.bool)
    mask[1] = False
    return u, v, a, b, mask


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_objective_re_loss_is_the_mean_over_kept_rows_of_both_directions(name):
    u, v, a, b, mask = _objective_inputs()
    beta, tau, scale = 0.4, 0.3, 4.0
    obj = SoftCLIPObjective(beta=beta, tau=tau, divergence=name, soft_weight=0.0, re_weight=1.0)
    out = obj(u, v, torch.tensor(scale, dtype=torch.float64), a, b, mask, None)
    sides = [SideView(x, x, m, m) for x, m in ((F.normalize(a, dim=1), mask), (F.normalize(b, dim=1), None))]
    y_i2t, y_t2i = (y.exp() for y in build_targets(*sides, "selfsim", "same", beta, tau, 0))
    means = []
    for logits, y in ((scale * u @ v.T, y_i2t), (scale * v @ u.T, y_t2i)):
        total, kept = slow_relation_enhanced(logits, y, 0, name)
        means.append(total / kept)
    assert float(out["re_loss"]) == pytest.approx(0.5 * sum(means), rel=1e-10)
    assert float(out["re_kept_fraction"]) == pytest.approx((5 + 6) / 12)


@pytest.mark.parametrize("target", ["selfsim", "label_smoothing"])
@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_re_term_is_invariant_to_beta_above_zero_and_vanishes_at_zero(target, name):
    """DESIGN: renormalising the off-diagonal target cancels β, so µ alone sets L_re for every β > 0 (and the
    term vanishes at β = 0: a jump, not a ramp)."""
    u, v, a, b, mask = _objective_inputs()
    s = torch.tensor(4.0, dtype=torch.float64)

    def re_loss(beta: float) -> torch.Tensor:
        obj = SoftCLIPObjective(target, beta=beta, tau=0.3, divergence=name, soft_weight=0.0, re_weight=1.0)
        return obj(u, v, s, a, b, mask, None)["re_loss"]

    at = {beta: re_loss(beta) for beta in (1e-6, 0.05, 0.3, 0.7, 1.0)}
    for beta, value in at.items():
        torch.testing.assert_close(value, at[0.3], rtol=1e-9, atol=1e-12, msg=f"beta={beta}")
    assert float(at[0.3]) > 0 and float(re_loss(0.0)) == 0.0
