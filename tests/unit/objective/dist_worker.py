"""Worker for test_distributed.py: ``torchrun --nproc_per_node=2 dist_worker.py OUT.json`` (gloo, CPU, float64).

Each rank first computes the single-process reference on the whole (seeded, identical) batch, then joins the
process group and runs the objective on its own rows. Let W be the world size, L the single-process loss on the
concatenated batch and L_r rank r's loss (its local rows against the gathered global columns). What must hold:

- losses: (1/W) Σ_r L_r = L, term by term (nce, soft, re, roi);
- features: the gradient of L_r that reaches rank r's own features x_r (through the gather's all-reduce) is
  ∂(Σ_q L_q)/∂x_r = W · ∂L/∂x_r, so x_r.grad / W equals the reference gradient's slice;
- parameters (DDP): averaging each rank's parameter gradient over ranks gives ∂L/∂θ exactly, the logit scales
  included (those enter every L_r directly, not through a gather).

The single-process reference is ``loss.impl: reference`` (the plain-autograd definition); both implementations
run distributed against it. Rank 0 writes the largest absolute differences (maximised over ranks) to OUT.json,
one case per (target setting, implementation); the test asserts on them.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from softclip.objective import SideInputs, SoftCLIPObjective
from softclip.objective.scoring import IMPLS
from tests.unit.objective.scenes import codes

N, D_IN, D, K_ROI, SIDE = 8, 7, 6, 9, 5
COMMON = dict(beta=0.4, tau=0.3, soft_weight=1.0, re_weight=0.5, roi_weight=0.3)
CASES = {
    "hard": dict(target="hard", pairing="same", divergence="symkl"),
    "label_smoothing": dict(target="label_smoothing", pairing="same", divergence="symkl"),
    "selfsim": dict(target="selfsim", pairing="same", divergence="symkl"),
    "selfsim_mean_kl": dict(target="selfsim", pairing="mean", divergence="kl"),
    "oracle": dict(target="oracle", pairing="same", divergence="symkl"),  # scene codes gathered across ranks
    "momentum": dict(target="momentum", pairing="same", divergence="symkl"),  # teacher features gathered
    "sigmoid_selfsim": dict(target="selfsim", pairing="same", divergence="symkl", contrastive="sigmoid",
                            re_weight=0.0),  # the bias enters every rank's loss directly  # fmt: skip
}
TERMS = ("loss", "nce_loss", "soft_loss", "re_loss", "roi_loss")


def make_params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes = [(D_IN, D), (D_IN, D), (K_ROI, SIDE)]
    params = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    params += [torch.tensor(2.5, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)]  # log scales
    params += [torch.tensor(-1.5, dtype=torch.float64)]  # the sigmoid loss's bias
    return [p.requires_grad_() for p in params]


def make_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    data = {k: torch.randn(N, n, generator=g, dtype=torch.float64) for k, n in
            (("xi", D_IN), ("xt", D_IN), ("regions", K_ROI), ("tags", SIDE))}  # fmt: skip
    data["image_mask"] = torch.tensor(
        [1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool
    )  # one per rank without regions
    data["text_mask"] = torch.tensor([1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    data["image_scene"], data["text_scene"] = codes(N)
    data["image_teacher"], data["text_teacher"] = (
        F.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=1) for _ in range(2)
    )
    return data


def run(obj: SoftCLIPObjective, params, data, rows: slice):
    """Forward + backward on ``rows``; returns the terms, the feature gradients and the parameter gradients."""
    wi, wt, wr, log_scale, log_roi_scale, bias = params
    u = F.normalize(data["xi"][rows] @ wi, dim=1)
    v = F.normalize(data["xt"][rows] @ wt, dim=1)
    a = data["regions"][rows] @ wr  # a learning aggregator: the ROI term trains wr
    for x in (u, v, a):
        x.retain_grad()
    side = SideInputs(a, data["tags"][rows], data["image_mask"][rows], data["text_mask"][rows],
                      **{k: data[k][rows] for k in ("image_scene", "text_scene", "image_teacher", "text_teacher")})
    out = obj(u, v, log_scale.exp(), side=side, roi_logit_scale=log_roi_scale.exp(),
              logit_bias=bias if obj.config.contrastive == "sigmoid" else None)  # fmt: skip
    out["loss"].backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    return {k: out[k].detach() for k in TERMS}, [u.grad, v.grad, a.grad], grads


def max_over_ranks(x: float) -> float:
    t = torch.tensor(x, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def compare(kwargs: dict, impl: str, data, reference) -> dict[str, float]:
    rank, world = dist.get_rank(), dist.get_world_size()
    n_local = N // world
    rows = slice(rank * n_local, (rank + 1) * n_local)
    terms, feats, grads = run(SoftCLIPObjective(**{**COMMON, **kwargs}, impl=impl), make_params(), data, rows)
    ref_terms, ref_feats, ref_grads = reference
    term_diff = 0.0
    for k in TERMS:
        mean = terms[k].clone()
        dist.all_reduce(mean)
        term_diff = max(term_diff, abs(float(mean) / world - float(ref_terms[k])))
    feat_diff = max(float((f / world - r[rows]).abs().max()) for f, r in zip(feats, ref_feats, strict=True))
    grad_diff = 0.0
    for g, r in zip(grads, ref_grads, strict=True):
        dist.all_reduce(g)  # DDP: average of the ranks' gradients
        grad_diff = max(grad_diff, float((g / world - r).abs().max()))
    return {
        "terms": max_over_ranks(term_diff),
        "feature_grads": max_over_ranks(feat_diff),
        "param_grads": max_over_ranks(grad_diff),
        "ref_re_loss": float(ref_terms["re_loss"]),
        "ref_roi_loss": float(ref_terms["roi_loss"]),
    }


def unequal_sizes_raise(data) -> bool:
    rank = dist.get_rank()
    rows = slice(0, 4) if rank == 0 else slice(4, 7)
    try:
        run(SoftCLIPObjective(**CASES["selfsim"], **COMMON), make_params(), data, rows)
    except ValueError as err:
        return "equal local batch sizes" in str(err)
    return False


def main(out_path: str) -> None:
    data = make_data()
    references = {name: run(SoftCLIPObjective(**{**COMMON, **kw}, impl="reference"), make_params(), data, slice(None))
                  for name, kw in CASES.items()}  # fmt: skip  # single process: before the group exists
    dist.init_process_group("gloo")
    try:
        result = {"world": dist.get_world_size(), "cases": {}}
        for name, kwargs in CASES.items():
            for impl in IMPLS.names():
                result["cases"][f"{name}/{impl}"] = compare(kwargs, impl, data, references[name])
        result["unequal_sizes_raise"] = bool(max_over_ranks(float(not unequal_sizes_raise(data))) == 0.0)
        if dist.get_rank() == 0:
            with open(out_path, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
