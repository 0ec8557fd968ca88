"""All-gather across ranks for the objective (gloo and nccl alike).

Each rank computes its local rows against the global columns. :func:`gather_with_grad` concatenates every
rank's tensor; its backward all-reduces (SUM) the incoming gradient and returns this rank's slice, i.e. the
gradient of the *sum over ranks* of the per-rank losses with respect to the local input.

Why that is right under DDP: let L = (1/W) Σ_r L_r be the single-process loss on the concatenated batch, with
L_r the mean over rank r's local rows (equal local sizes). The gradient that reaches rank r's features is
∂(Σ_q L_q)/∂x_r = W · ∂L/∂x_r, and DDP averages parameter gradients over the W ranks, so every parameter receives
exactly ∂L/∂θ. Replicated scalars used directly (the logit scale) get ∂L_r/∂s on rank r, whose DDP average is ∂L/∂s.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; backward: all-reduce (SUM), keep the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.n_local = dist.get_rank(), x.shape[0]
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.n_local
        return grad[start : start + ctx.n_local]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[N_l, ...] -> [W·N_l, ...], differentiable (local slice gets the summed gradient); identity if W = 1."""
    if rank_and_world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """[N_l, ...] -> [W·N_l, ...] without gradient (side features, masks); identity if W = 1."""
    if rank_and_world()[1] == 1:
        return x
    if x.dtype == torch.bool:  # not every backend gathers bool
        return _all_gather(x.detach().to(torch.uint8)).to(torch.bool)
    return _all_gather(x.detach())


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of a detached tensor over ranks (a copy; identity if W = 1)."""
    if rank_and_world()[1] == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def check_equal_local_sizes(n_local: int, device: torch.device) -> None:
    """Raise ValueError unless every rank holds the same number of samples (the offsets assume it)."""
    _, world = rank_and_world()
    if world == 1:
        return
    sizes = _all_gather(torch.tensor([n_local], dtype=torch.int64, device=device)).tolist()
    if len(set(sizes)) != 1:
        raise ValueError(
            f"SoftCLIPObjective needs equal local batch sizes on every rank, got {sizes}; "
            "drop the last incomplete batch (drop_last=True) or pad it"
        )
