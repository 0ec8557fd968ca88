"""The sigmoid loss (``loss.contrastive: sigmoid``): open_clip's SigLipLoss with hard targets (loss and gradients,
float64), the per-pair soft labels against a brute-force formula, the gradient of a soft pair, gradcheck, and the
one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from softclip.config import ConfigError, LossConfig
from softclip.objective import DIVERGENCES, SideInputs, SoftCLIPObjective
from softclip.objective.reference import ONE_HOT_RULES, DirectionSpec
from softclip.objective.sigmoid import direction_terms, log1mexp
from tests.unit.objective.scenes import scene_kwargs

TOL = 1e-6


def _inputs(n: int = 9, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    v = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    s = torch.tensor(math.log(10.0), dtype=torch.float64).exp().requires_grad_()
    b = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    return u, v, s, b


@pytest.mark.parametrize("n", [1, 2, 9])
@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize(
    "setting",
    [dict(target="hard", soft_weight=0.0), dict(target="label_smoothing", soft_weight=0.0),
     dict(target="selfsim", beta=0.0, soft_weight=0.0)],
)  # fmt: skip
def test_hard_targets_are_open_clip_siglip_loss_and_gradients(n, impl, setting):
    u, v, s, b = _inputs(n)
    obj = SoftCLIPObjective(**setting, re_weight=0.0, roi_weight=0.0, contrastive="sigmoid", impl=impl)
    ours = obj(u, v, s, logit_bias=b)
    theirs = SigLipLoss()(u, v, s, b)
    torch.testing.assert_close(ours["loss"], theirs, rtol=0, atol=TOL)
    torch.testing.assert_close(ours["nce_loss"], theirs.detach(), rtol=0, atol=TOL)
    for got, want in zip(torch.autograd.grad(ours["loss"], (u, v, s, b)),
                         torch.autograd.grad(theirs, (u, v, s, b)), strict=True):  # fmt: skip
        torch.testing.assert_close(got, want, rtol=0, atol=TOL)


def test_the_single_product_path_with_identity_labels_is_twice_siglip():
    """Soft term on with β = 0: one product serves both directions, and the soft term is the hard one again."""
    u, v, s, b = _inputs(7, seed=2)
    obj = SoftCLIPObjective(target="selfsim", beta=0.0, re_weight=0.0, contrastive="sigmoid", divergence="ce")
    out = obj(u, v, s, logit_bias=b)
    theirs = SigLipLoss()(u, v, s, b)
    torch.testing.assert_close(out["loss"], 2 * theirs, rtol=0, atol=TOL)
    torch.testing.assert_close(out["soft_loss"], theirs.detach(), rtol=0, atol=TOL)


def _brute_force_soft(z: torch.Tensor, y: torch.Tensor, divergence: str, floor: float, rule: str) -> torch.Tensor:
    """Σ_ij D((y, 1 − y) ‖ (σ(z), σ(−z))) / N_l, one pair at a time."""
    total = torch.zeros((), dtype=z.dtype)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            p = torch.sigmoid(z[i, j])
            pair_p, pair_y = (p, 1 - p), (y[i, j], 1 - y[i, j])
            forward = sum(t * (math.log(t) - torch.log(q)) for t, q in zip(pair_y, pair_p, strict=True) if t > 0)
            cross = -sum(t * torch.log(q) for t, q in zip(pair_y, pair_p, strict=True))
            if divergence == "kl":
                total = total + forward
            elif divergence == "ce":
                total = total + cross
            else:
                one_hot = bool((pair_y[0] == 0) | (pair_y[1] == 0))
                reverse = sum(q * (torch.log(q) - math.log(max(float(t), floor))) for t, q in zip(pair_y, pair_p, strict=True))
                total = total + forward + (0.0 if one_hot and rule == "forward" else reverse)
    return total / z.shape[0]


@pytest.mark.parametrize("divergence", DIVERGENCES.names())
@pytest.mark.parametrize("rule", ONE_HOT_RULES)
@pytest.mark.parametrize("shape,offset", [((4, 4), 0), ((3, 7), 2)])
def test_soft_term_is_the_pairwise_divergence_of_the_row_targets(divergence, rule, shape, offset):
    g = torch.Generator().manual_seed(5)
    z = 3 * torch.randn(*shape, generator=g, dtype=torch.float64)
    log_y = torch.log_softmax(2 * torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)
    log_y[0] = float("-inf")
    log_y[0, offset] = 0.0  # a one-hot row (label 1 on the positive, 0 elsewhere)
    log_y[1, (offset + 1) % shape[1]] = float("-inf")  # a masked column (label 0)
    spec = DirectionSpec(offset, divergence, 1e-8, rule, nce_weight=0.0, soft_weight=1.0)
    _, _, soft, re_sum, _, _ = direction_terms(z, log_y, None, spec)
    torch.testing.assert_close(soft, _brute_force_soft(z, log_y.exp(), divergence, 1e-8, rule), rtol=1e-10, atol=1e-10)
    assert re_sum == 0


def test_a_pair_is_pulled_toward_the_mean_of_its_two_direction_labels():
    """kl/ce: d/dz_ij of ½(L_soft^{i2t} + L_soft^{t2i}) = (σ(z_ij) − ½(Y^{i2t}_ij + Y^{t2i}_ji)) / N."""
    n = 6
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, n, generator=g, dtype=torch.float64).requires_grad_()
    y_i2t, y_t2i = (torch.log_softmax(torch.randn(n, n, generator=g, dtype=torch.float64), 1) for _ in range(2))
    spec = DirectionSpec(0, "ce", 1e-8, "forward", nce_weight=0.0, soft_weight=0.5)
    total = direction_terms(z, y_i2t, None, spec)[0] + direction_terms(z.T, y_t2i, None, spec)[0]
    (grad,) = torch.autograd.grad(total, z)
    expected = (torch.sigmoid(z) - 0.5 * (y_i2t.exp() + y_t2i.exp().T)) / n
    torch.testing.assert_close(grad, expected.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", ["hard", "label_smoothing", "selfsim", "oracle", "momentum"])
@pytest.mark.parametrize("divergence", DIVERGENCES.names())
def test_gradcheck_sigmoid_terms(target, divergence):
    u, v, s, b = _inputs(5, 3, seed=4)
    s = s.detach().mul(0.4).requires_grad_()  # moderate logits: a well-conditioned finite difference
    b = b.detach().mul(0.1).requires_grad_()
    obj = SoftCLIPObjective(target, beta=0.4, tau=0.5, divergence=divergence, re_weight=0.0, contrastive="sigmoid")
    side = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def loss(u, v, b, s=s):
        return obj(u, v, s, side=SideInputs(side, side.flip(0), **scene_kwargs(target, 5)), logit_bias=b)["loss"]

    assert torch.autograd.gradcheck(loss, (u, v, b), fast_mode=True)
    if target != "momentum":  # the teacher's logits carry s's value (detached): s is a constant of its target
        assert torch.autograd.gradcheck(lambda s: loss(u, v, b, s), (s,))


def test_log1mexp_is_accurate_at_both_ends():
    x = torch.tensor([0.0, -1e-20, -1e-8, -0.5, -math.log(2), -2.0, -50.0, float("-inf")], dtype=torch.float64)
    expected = [float("-inf"), math.log(1e-20), math.log(-math.expm1(-1e-8)), math.log(-math.expm1(-0.5)),
                math.log(0.5), math.log1p(-math.exp(-2.0)), math.log1p(-math.exp(-50.0)), 0.0]  # fmt: skip
    torch.testing.assert_close(log1mexp(x), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_errors_name_the_key():
    with pytest.raises(ValueError, match="loss.re_weight=0.5 with loss.contrastive=sigmoid"):
        SoftCLIPObjective(contrastive="sigmoid")
    with pytest.raises(ValueError, match="loss.re_weight=0.5 with loss.contrastive=sigmoid"):
        LossConfig(contrastive="sigmoid")
    with pytest.raises(ValueError, match="did you mean 'sigmoid'"):
        LossConfig(contrastive="sigmod")
    u, v, s, b = _inputs(4)
    with pytest.raises(ValueError, match="needs logit_bias"):
        SoftCLIPObjective(contrastive="sigmoid", re_weight=0.0)(u, v, s)
    with pytest.raises(ValueError, match="only used by loss.contrastive=sigmoid"):
        SoftCLIPObjective()(u, v, s, logit_bias=b)
    assert issubclass(ConfigError, ValueError)
