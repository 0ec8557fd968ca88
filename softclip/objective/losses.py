"""The fused path of the SoftCLIP objective's loss terms (``loss.impl: fused``).

Same contract and the same definition as :mod:`softclip.objective.reference` (tested equal there, loss and
gradients): one direction at a time, a block of logits Z ``[N_l, N_g]`` whose local row i has its positive at
global column ``offset + i``, and its log target log Y.

One autograd Function per direction (:func:`direction_terms`) shares one ``log_softmax`` and writes its
backward out: the gradient of the weighted sum w_nce·L_nce + w_soft·L_soft + w_re·ΣD_re with respect to the
logits is formed during the forward pass (softmax backward of each divergence's derivative with respect to
log P), so the backward pass is one multiplication and the block count stays small. Scratch blocks come from a
:class:`Workspace`, because fresh [N_l, N_g] blocks cost page faults on every step on a CPU. It exists only
while it measurably pays against the reference (reports/perf/objective.md).

:class:`FusedPath` is what ``loss.impl: fused`` gives the objective (:data:`softclip.objective.scoring.IMPLS`): these
terms, the kept rows of the relation-enhanced term found in place, and the target blocks from its workspace.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from softclip.objective.divergences import DIVERGENCES, TargetRows
from softclip.objective.reference import DirectionSpec, positives
from softclip.objective.targets import NEG_INF


class Workspace:
    """Scratch blocks reused from call to call, keyed by name (shape, dtype and device must match).

    On a CPU a fresh multi-megabyte block is returned to the OS when freed and faulted in again, page by page, on
    the next step; keeping the few scratch blocks of the objective alive avoids that. Disabled (fresh blocks every
    time) on accelerators, whose caching allocators already reuse memory. Not for concurrent calls.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._blocks: dict[str, torch.Tensor] = {}

    def get(self, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised block of ``shape`` with ``like``'s dtype and device."""
        if not (self.enabled and like.device.type == "cpu"):
            return like.new_empty(shape)
        block = self._blocks.get(key)
        if block is None or block.shape != shape or block.dtype != like.dtype or block.device != like.device:
            block = self._blocks[key] = like.new_empty(shape)
        return block

    def clear(self) -> None:
        """Release every block."""
        self._blocks.clear()

    def __getstate__(
        self,
    ) -> dict[str, bool]:  # pickling or deep-copying an objective drops the scratch blocks
        return {"enabled": self.enabled}

    def __setstate__(self, state: dict[str, bool]) -> None:
        self.__init__(state["enabled"])


# --- off-diagonal layout -------------------------------------------------------------------------------------
# Every row loses exactly one entry, (i, offset + i), so the row-major sequence without those entries regroups
# into rows of N_g - 1 that stay aligned with the original rows. Three strided views pair the full block with
# the compact one: no index tensors, one pass per copy or add.


def _segments(
    full: torch.Tensor, compact: torch.Tensor, offset: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    n_local, n_global = full.shape
    flat, flat_c = full.view(-1), compact.view(-1)
    stride, first = n_global + 1, offset  # consecutive diagonal entries lie `stride` apart
    last = first + (n_local - 1) * stride
    n_mid = (n_local - 1) * n_global
    return [
        (flat[:first], flat_c[:first]),
        (
            flat[first + 1 : last + 1].view(n_local - 1, stride)[:, :-1],
            flat_c[first : first + n_mid].view(n_local - 1, n_global),
        ),
        (flat[last + 1 :], flat_c[first + n_mid :]),
    ]


def _check_block(shape: torch.Size, offset: int) -> None:
    n_local, n_global = shape
    if n_local == 0 or offset < 0 or offset + n_local > n_global:
        raise ValueError(f"diagonal offset {offset} does not fit a {n_local}x{n_global} block")


def _drop_diagonal(x: torch.Tensor, offset: int, out: torch.Tensor | None = None) -> torch.Tensor:
    x = x.contiguous()
    out = x.new_empty(x.shape[0], x.shape[1] - 1) if out is None else out
    for full, compact in _segments(x, out, offset):
        compact.copy_(full)
    return out


def _add_off_diagonal_(
    out: torch.Tensor, compact: torch.Tensor, scale: float | torch.Tensor, offset: int
) -> None:
    """out[i, j != offset + i] += scale * compact[i, .] in place (``out`` contiguous; scale a number or 0-dim)."""
    for full, comp in _segments(out, compact.contiguous(), offset):
        if isinstance(scale, torch.Tensor):
            full.addcmul_(comp, scale)
        else:
            full.add_(comp, alpha=scale)


# --- the fused direction ------------------------------------------------------------------------------------


def _softmax_backward_(grad_log_p: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """d/dZ from d/d log P for log P = log_softmax(Z): g - p · sum(g), in place. Shapes: [R, C]."""
    return grad_log_p.addcmul_(p, grad_log_p.sum(1, keepdim=True), value=-1.0)


def _off_targets(
    y: torch.Tensor, log_y: torch.Tensor, spec: DirectionSpec, ws: Workspace, scratch: torch.Tensor
) -> TargetRows:
    """Ỹ from log Y (before it is clamped): log Ỹ = log Y_off − logsumexp(log Y_off), in log space, so that an
    off-diagonal mass below float range still renormalises exactly. Rows without such mass come out all zeros."""
    shape = (y.shape[0], y.shape[1] - 1)
    log_off = _drop_diagonal(log_y, spec.offset, out=ws.get("log_off", shape, y))
    top = log_off.amax(1, keepdim=True)
    top.masked_fill_(top == NEG_INF, 0.0)  # rows without off-diagonal mass: exp(−inf − 0) = 0, no NaN
    y_off = torch.sub(log_off, top, out=ws.get("y_off", shape, y)).exp_()
    mass = y_off.sum(1, keepdim=True)
    mass.masked_fill_(mass == 0, 1.0)
    y_off.div_(mass)
    log_off.sub_(mass.log_().add_(top))
    compact = scratch.view(-1)[: shape[0] * shape[1]].view(shape)
    return TargetRows.from_log(y_off, log_off, compact, spec.reverse_floor, spec.one_hot_rows == "forward")


def _drop_row_diagonals(x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[k, C] -> [k, C - 1], dropping column cols[r] from row r (gather; for a few rows)."""
    j = torch.arange(x.shape[1] - 1, device=x.device).unsqueeze(0)
    return x.gather(1, j + (j >= cols.unsqueeze(1)).long())


def _off_log_probs(
    z: torch.Tensor, log_p: torch.Tensor, p: torch.Tensor, offset: int, ws: Workspace
) -> tuple[torch.Tensor, torch.Tensor]:
    """log P̃ and P̃ [N_l, N_g - 1]: the softmax over the off-diagonal logits, in log space.

    log P̃ = log P - log Σ_{j≠i} P_j, which equals log_softmax of the off-diagonal logits and reuses the full
    log_softmax. Rows whose off-diagonal mass is too small for its entries to be normal numbers (a dominant
    diagonal at large logit scales) take log_softmax of their off-diagonal logits directly.
    """
    shape = (z.shape[0], z.shape[1] - 1)
    p_off = _drop_diagonal(p, offset, out=ws.get("p_off", shape, z))
    mass = p_off.sum(1, keepdim=True)
    finfo = torch.finfo(z.dtype)
    ok = mass >= finfo.tiny / finfo.eps
    mass = torch.where(ok, mass, torch.ones_like(mass))
    log_p_off = _drop_diagonal(log_p, offset, out=ws.get("lp_off", shape, z)).sub_(mass.log())
    p_off.div_(mass)
    bad = (~ok).squeeze(1).nonzero().squeeze(1)
    if bad.numel():
        exact = torch.log_softmax(_drop_row_diagonals(z[bad], bad + offset), dim=1)
        log_p_off[bad] = exact
        p_off[bad] = exact.exp()
    return log_p_off, p_off


def _relation_enhanced(
    off_probs: tuple[torch.Tensor, torch.Tensor],
    target: TargetRows,
    keep: torch.Tensor,
    spec: DirectionSpec,
    need: bool,
    scratch: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(sum over kept rows of D(Ỹ || P̃), its derivative with respect to the off-diagonal logits or None)."""
    log_p, p = off_probs
    compact = scratch.view(-1)[: log_p.numel()].view(log_p.shape)
    rows, grad = DIVERGENCES.get(spec.re_div)(target, log_p, p, need, compact)
    value = torch.where(keep, rows, torch.zeros_like(rows)).sum()
    if not need:
        return value, None
    grad = _softmax_backward_(grad, p)
    return value, grad.index_fill_(0, (~keep).nonzero().squeeze(1), 0.0)


class _DirectionTerms(torch.autograd.Function):
    """(total, nce, soft, re_sum, pos_mass, neg_entropy) of one direction; only ``total`` is differentiable."""

    @staticmethod
    def forward(ctx, z, log_y, keep, spec: DirectionSpec, workspace: Workspace | None):  # type: ignore[override]
        need = ctx.needs_input_grad[0]
        ws = workspace or Workspace(enabled=False)
        n = z.shape[0]
        log_p = torch.log_softmax(z, dim=1, out=ws.get("lp", z.shape, z))
        p = torch.exp(log_p)  # becomes the gradient block saved for backward
        nce = F.nll_loss(log_p, positives(n, spec.offset, z.device))
        pos_mass = p.diagonal(spec.offset).mean()
        zero = z.new_zeros(())
        soft = re_sum = neg_entropy = zero
        grad_soft = off = off_probs = dz = None
        if log_y is not None:
            scratch = ws.get("scratch", z.shape, z)
            y = torch.exp(log_y, out=ws.get("y", z.shape, z))
            off = _off_targets(y, log_y, spec, ws, scratch) if spec.re_weight is not None else None
            full = TargetRows.from_log(y, log_y, scratch, spec.reverse_floor, spec.one_hot_rows == "forward")
            neg_entropy = full.neg_entropy.mean()
            off_probs = _off_log_probs(z, log_p, p, spec.offset, ws) if off is not None else None  # p still P
            if spec.soft_weight > 0:
                rows, grad = DIVERGENCES.get(spec.divergence)(full, log_p, p, need, scratch)
                soft = rows.mean()
                grad_soft = _softmax_backward_(grad, p) if need else None
        if need:  # the gradient block takes p's storage; scratch is free again once grad_soft is added
            dz = p.mul_(spec.nce_weight / n)  # d CE / dZ = (P - I) / n
            dz.diagonal(spec.offset).sub_(spec.nce_weight / n)
            if grad_soft is not None:
                dz.add_(grad_soft, alpha=spec.soft_weight / n)
        if off is not None:
            re_sum, grad_re = _relation_enhanced(off_probs, off, keep, spec, need, scratch)
            if grad_re is not None:
                _add_off_diagonal_(dz, grad_re, spec.re_weight, spec.offset)
        ctx.save_for_backward(dz)
        total = spec.nce_weight * nce + spec.soft_weight * soft
        if spec.re_weight is not None:
            total = total + spec.re_weight * re_sum
        outputs = (total, nce, soft, re_sum, pos_mass, neg_entropy)
        ctx.mark_non_differentiable(*outputs[1:])
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, g_total, *_unused):  # type: ignore[override]
        (dz,) = ctx.saved_tensors
        return dz * g_total, None, None, None, None


def direction_terms(
    logits: torch.Tensor,
    log_y: torch.Tensor | None,
    keep: torch.Tensor | None,
    spec: DirectionSpec,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, ...]:
    """All terms of one direction from one ``log_softmax``; the contract of
    :func:`softclip.objective.reference.direction_terms`.

    Args:
        logits: [N_l, N_g] (float32 or float64).
        log_y: [N_l, N_g] log target rows (no gradient; overwritten), or None (identity: only InfoNCE).
        keep: [N_l] bool, rows with off-diagonal target mass (:func:`off_diagonal_mass`), when ``spec.re_weight``
            is set.
        spec: offset, divergence, weights, floor, one-hot rule.
        workspace: scratch blocks reused across calls (None: fresh blocks).

    Returns:
        (total, nce, soft, re_sum, pos_mass, neg_entropy); only ``total`` is differentiable.
    """
    _check_block(logits.shape, spec.offset)
    if log_y is None:
        spec = replace(spec, soft_weight=0.0, re_weight=None)
    elif spec.re_weight is not None and (keep is None or logits.shape[1] < 2):
        raise ValueError("the relation-enhanced term needs N_g >= 2 and the kept rows (off_diagonal_mass)")
    return _DirectionTerms.apply(logits, log_y, keep, spec, workspace)


def off_diagonal_mass(log_y: torch.Tensor, offset: int) -> torch.Tensor:
    """[N_l] bool: rows of Y with off-diagonal mass (some off-diagonal log Y is finite), the rows the
    relation-enhanced term keeps.

    Masks the diagonal for the duration (``log_y`` must be writable; it is restored) rather than copying the
    block.
    """
    diag = log_y.diagonal(offset)
    saved = diag.clone()
    diag.fill_(NEG_INF)
    try:
        return log_y.amax(dim=1) > NEG_INF
    finally:
        diag.copy_(saved)


class FusedPath:
    """``loss.impl: fused``: the fused terms, the kept rows found in place, target blocks from a :class:`Workspace`
    (one per objective; pickling drops its blocks)."""

    def __init__(self) -> None:
        self.workspace = Workspace()

    def terms(self, logits, log_y, keep, spec: DirectionSpec) -> tuple[torch.Tensor, ...]:
        """:func:`direction_terms` with this path's workspace."""
        return direction_terms(logits, log_y, keep, spec, self.workspace)

    @staticmethod
    def kept_rows(log_y: torch.Tensor, offset: int) -> torch.Tensor:
        """[N_l] bool, :func:`off_diagonal_mass` (in place, restored)."""
        return off_diagonal_mass(log_y, offset)

    def target_blocks(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two scratch blocks of ``like``'s shape the targets of A and B are built in."""
        return tuple(self.workspace.get(f"target_{k}", tuple(like.shape), like) for k in "ab")
