"""Property tests (hypothesis): for any batch size, dimension, β, τ, logit scale (1e-3 .. 1e6) and masks, every
target/divergence/pairing gives finite terms and finite gradients, never NaN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softclip.objective import CONTRASTIVES, DIVERGENCES, SideInputs, SoftCLIPObjective
from tests.unit.objective.scenes import TARGET_PAIRINGS, bias_kwargs, scene_kwargs

SCALES = st.one_of(
    st.sampled_from([1e-3, 1.0, 1 / 0.07, 100.0, 1e3, 1e6]),
    st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False),
)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 8))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    u = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    v = u.clone() if draw(st.booleans()) else F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    side_dim = draw(st.integers(1, 4))
    a = torch.randn(n, side_dim, generator=g, dtype=dtype) * draw(st.sampled_from([0.0, 1.0, 1e3]))
    b = torch.randn(n, side_dim, generator=g, dtype=dtype)
    masks = [
        None if draw(st.booleans()) else torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        for _ in range(2)
    ]
    return u, v, a, b, masks


@settings(max_examples=40, deadline=None)
@given(
    batch=batches(),
    target_pairing=st.sampled_from(TARGET_PAIRINGS),
    divergence=st.sampled_from(DIVERGENCES.names()),
    contrastive=st.sampled_from(CONTRASTIVES.names()),
    beta=st.floats(0.0, 1.0),
    tau=st.floats(1e-3, 10.0),
    scale=SCALES,
    roi=st.booleans(),
)
def test_finite_terms_and_gradients(batch, target_pairing, divergence, contrastive, beta, tau, scale, roi):
    (target, pairing), u, v, a, b, (ma, mb) = target_pairing, *batch
    u, v, a = u.requires_grad_(), v.requires_grad_(), a.requires_grad_(roi)
    s = torch.tensor(scale, dtype=u.dtype, requires_grad=True)
    obj = SoftCLIPObjective(
        target, beta=beta, tau=tau, divergence=divergence, pairing=pairing,
        re_weight=0.0 if contrastive == "sigmoid" else 0.5,
        roi_weight=0.5 if roi else 0.0, contrastive=contrastive,
    )  # fmt: skip
    out = obj(u, v, s, side=SideInputs(a, b, ma, mb, **scene_kwargs(target, len(u))), **bias_kwargs(contrastive, u.dtype))
    for key, value in out.items():
        if key.startswith(("target_precision_", "target_true_share")):
            continue  # diagnostics, NaN by definition where no row has off-diagonal target mass (n = 1, say)
        assert torch.isfinite(value).all(), (key, value)
    inputs = (u, v, s, a) if roi else (u, v, s)
    grads = torch.autograd.grad(out["loss"], inputs, allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all()
