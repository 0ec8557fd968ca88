"""The SoftCLIP objective on CUDA (fused and reference paths) against the CPU float64 reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

from softclip.objective import SoftCLIPObjective

pytestmark = pytest.mark.gpu

N, D, SIDE = 64, 32, 16
RTOL_LOSS = 1e-4  # relative, per term
RTOL_GRAD = 1e-3  # max |difference| over max |reference gradient|, per input
TERMS = ("loss", "nce_loss", "soft_loss", "re_loss", "roi_loss")
CONFIGS = {
    "softclip": {},  # paper defaults: selfsim targets from side features, symkl, relation-enhanced term, ROI InfoNCE
    "clip": {"target": "hard", "soft_weight": 0.0, "re_weight": 0.0},  # the ClipLoss special case
    "sigmoid": {"contrastive": "sigmoid", "re_weight": 0.0},
}


@pytest.fixture
def no_tf32() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def inputs(config: str) -> dict[str, torch.Tensor]:
    """Float64 CPU inputs: unit features U, V, side features A, B with ~20% of samples masked out, the scale."""
    g = torch.Generator().manual_seed(0)
    x = {
        "image_features": F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1),
        "text_features": F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1),
        "logit_scale": torch.tensor(1 / 0.07, dtype=torch.float64),
        "image_side": torch.randn(N, SIDE, generator=g, dtype=torch.float64),
        "text_side": torch.randn(N, SIDE, generator=g, dtype=torch.float64),
        "image_side_mask": torch.rand(N, generator=g) > 0.2,
        "text_side_mask": torch.rand(N, generator=g) > 0.2,
    }
    if config == "sigmoid":
        x["logit_bias"] = torch.tensor(-10.0, dtype=torch.float64)
    return x


def run(objective: SoftCLIPObjective, x: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype):
    """(terms as float64 CPU scalars, gradients of the float inputs as float64 CPU tensors)."""
    leaves = {k: (v.to(device, dtype, copy=True).requires_grad_() if v.is_floating_point() else v.to(device))
              for k, v in x.items()}  # fmt: skip
    out = objective.to(device)(**leaves)
    out["loss"].backward()
    terms = {k: out[k].detach().double().cpu() for k in TERMS}
    grads = {k: v.grad.double().cpu() for k, v in leaves.items() if v.is_floating_point() and v.grad is not None}
    return terms, grads


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_objective_matches_float64_reference(device: torch.device, record: Callable, no_tf32: None,
                                             impl: str, config: str) -> None:  # fmt: skip
    """fp32 on the device (``loss.impl`` fused or reference) vs ``impl=reference`` in float64 on the CPU, N = 64.

    Loss terms within 1e-4 relative; gradients of U, V, the scale (and bias), and A (the ROI side, which learns)
    within 1e-3 of the largest reference gradient entry. fp32 rounding of 64-column softmaxes is ~1e-6 relative;
    the bounds leave room for the logs of tiny target masses in the symmetric KL.
    """
    x = inputs(config)
    ref_terms, ref_grads = run(SoftCLIPObjective(impl="reference", **CONFIGS[config]), x, torch.device("cpu"),
                               torch.float64)  # fmt: skip
    terms, grads = run(SoftCLIPObjective(impl=impl, **CONFIGS[config]), x, device, torch.float32)
    term_err = {k: (terms[k] - ref_terms[k]).abs().item() / max(ref_terms[k].abs().item(), 1e-12) for k in TERMS
                if ref_terms[k].abs().item() > 0}  # fmt: skip
    grad_err = {k: ((grads[k] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item() for k, g in ref_grads.items()}
    assert grads.keys() == ref_grads.keys()
    record("loss", terms["loss"].item())
    record("max_rel_term_err", max(term_err.values()))
    record("max_rel_grad_err", max(grad_err.values()))
    record("grads_checked", sorted(grads))
    assert all(torch.isfinite(v).all() for v in [*terms.values(), *grads.values()])
    bad_terms = {k: v for k, v in term_err.items() if v > RTOL_LOSS}
    bad_grads = {k: v for k, v in grad_err.items() if v > RTOL_GRAD}
    assert not bad_terms and not bad_grads, (bad_terms, bad_grads)
