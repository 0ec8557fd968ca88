"""torch.autograd.gradcheck (float64) through the whole objective: every target x divergence x RE on/off,
parametrised from the registries (a new entry is checked automatically), plus pairings, masks and the ROI term.

``fast_mode`` (a random projection of the Jacobian) keeps the matrix quick; the default symkl/selfsim case and the
ROI term also run the full Jacobian. The objective writes its backward out (divergence derivatives, softmax backward, off-diagonal layout), so these
checks are what ties that code to the definition. Targets depend on the side features A and B, which carry no
gradient by design, so A and B are held constant here; the momentum target depends on the value of s (the teacher's
logits carry it, detached), so s is held constant for it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softclip.objective import DIVERGENCES, PAIRINGS, TARGETS, SideInputs, SoftCLIPObjective
from tests.unit.objective.scenes import scene_kwargs

N, D = 5, 3
IMAGE_MASK = torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool)
TEXT_MASK = torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    v = F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    a = torch.randn(N, 4, generator=g, dtype=torch.float64)
    b = torch.randn(N, 4, generator=g, dtype=torch.float64)
    return u, v, scale, a, b


@pytest.mark.parametrize("target", TARGETS.names())
@pytest.mark.parametrize("divergence", DIVERGENCES.names())
@pytest.mark.parametrize("re_weight", [0.0, 0.5])
def test_gradcheck_target_divergence_relation(target, divergence, re_weight):
    u, v, scale, a, b = _inputs()
    obj = SoftCLIPObjective(target, beta=0.4, tau=0.5, divergence=divergence, re_weight=re_weight)

    def loss(u, v, scale=scale):
        return obj(u, v, scale, side=SideInputs(a, b, IMAGE_MASK, TEXT_MASK, **scene_kwargs(target, len(u))))["loss"]

    inputs = (u, v) if target == "momentum" else (u, v, scale)
    assert torch.autograd.gradcheck(loss, inputs, fast_mode=True)


def test_gradcheck_full_jacobian_default_objective():
    u, v, scale, a, b = _inputs(seed=3)
    obj = SoftCLIPObjective()
    assert torch.autograd.gradcheck(lambda u, v, s: obj(u, v, s, a, b, IMAGE_MASK)["loss"], (u, v, scale))


@pytest.mark.parametrize("pairing", PAIRINGS.names())
def test_gradcheck_pairings_without_masks(pairing):
    u, v, scale, a, b = _inputs(seed=1)
    obj = SoftCLIPObjective(pairing=pairing, beta=0.7, tau=0.3)
    assert torch.autograd.gradcheck(lambda u, v, s: obj(u, v, s, a, b)["loss"], (u, v, scale), fast_mode=True)


def test_gradcheck_roi_term():
    """Hard targets (independent of A), so the learned image side may carry gradient through the ROI term."""
    u, v, scale, a, b = _inputs(seed=2)
    a.requires_grad_()
    roi_scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    obj = SoftCLIPObjective("hard", roi_weight=0.7)

    def loss(u, v, scale, a, roi_scale):
        return obj(u, v, scale, a, b, IMAGE_MASK, TEXT_MASK, roi_logit_scale=roi_scale)["loss"]

    assert torch.autograd.gradcheck(loss, (u, v, scale, a, roi_scale))
