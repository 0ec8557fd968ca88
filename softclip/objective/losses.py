"""The loss terms of the SoftCLIP objective (DESIGN.md, 'The SoftCLIP objective').

All terms work on one *direction* at a time: a block of logits Z ``[N_l, N_g]`` whose local row i has its
positive at global column ``offset + i`` (single process: N_l = N_g, offset 0).

- InfoNCE: mean over rows of -log p(positive), i.e. CE(Z, I) as open_clip's ``ClipLoss`` computes it.
- Soft loss: mean over rows of D(Y || P).
- Relation-enhanced (disentangled negatives): the diagonal is dropped from every row of Y and of the logits; Ỹ is
  renormalised and log P̃ is the log_softmax of the off-diagonal logits (log space, so the diagonal logit has no
  influence at all); D(Ỹ || P̃) is **summed** over the rows that keep off-diagonal target mass, and the caller
  divides by the (global) number of such rows.
- ROI<->tag InfoNCE (:func:`roi_info_nce_sums`) over the samples that have both sides.

The first three come out of one autograd Function per direction (:func:`direction_terms`) that shares one
``log_softmax`` and writes its backward out: the gradient of the weighted sum w_nce·L_nce + w_soft·L_soft +
w_re·ΣD_re with respect to the logits is formed during the forward pass (softmax backward of each divergence's
derivative with respect to log P), so the backward pass is one multiplication. The individual terms are returned
as detached values for logging. Scratch blocks come from a :class:`Workspace`, because fresh [N_l, N_g] blocks
cost page faults on every step on a CPU. :func:`info_nce`, :func:`soft_loss` and :func:`relation_enhanced_sums`
expose single terms (differentiable) for tests and analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from softclip.objective.divergences import Divergence, TargetRows, exact_log


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


def positives(n_local: int, offset: int, device: torch.device) -> torch.Tensor:
    """[N_l] int64 global column of each local row's positive."""
    return torch.arange(offset, offset + n_local, device=device)


def identity_like(x: torch.Tensor, offset: int) -> torch.Tensor:
    """[N_l, N_g] zeros with ones at (i, offset + i), same dtype and device as ``x``."""
    eye = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
    eye.diagonal(offset).fill_(1.0)
    return eye


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


class _OffDiagonal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, offset: int) -> torch.Tensor:  # type: ignore[override]
        ctx.offset = offset
        return _drop_diagonal(x, offset)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        out = grad.new_zeros(grad.shape[0], grad.shape[1] + 1)
        _add_off_diagonal_(out, grad, 1.0, ctx.offset)
        return out, None


def off_diagonal(x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Drop entry (i, offset + i) from every row.

    Args:
        x: [N_l, N_g] with 0 <= offset and offset + N_l <= N_g.
        offset: column of row 0's diagonal.

    Returns:
        [N_l, N_g - 1], rows aligned with ``x``'s (differentiable; the diagonal gets zero gradient).
    """
    _check_block(x.shape, offset)
    if x.requires_grad and torch.is_grad_enabled():
        return _OffDiagonal.apply(x, offset)
    return _drop_diagonal(x, offset)


def off_diagonal_keep(y: torch.Tensor, offset: int) -> torch.Tensor:
    """[N_l] bool: rows of Y with off-diagonal mass (the rows the relation-enhanced term keeps).

    Sums each row with its diagonal entry zeroed for the duration (``y`` must be writable; it is restored), which
    decides positivity exactly as summing the off-diagonal entries does.
    """
    diag = y.diagonal(offset)
    saved = diag.clone()
    diag.zero_()
    try:
        return y.sum(1) > 0
    finally:
        diag.copy_(saved)


# --- the fused direction ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionSpec:
    """What one direction computes.

    Attributes:
        offset: global column of local row 0's positive.
        divergence: a :data:`DIVERGENCES` entry.
        nce_weight: weight of the InfoNCE mean in the differentiable total.
        soft_weight: weight of the soft-loss mean (0: not computed).
        re_weight: weight of the relation-enhanced row sum (None: not computed; a 0-dim tensor is fine).
        workspace: scratch blocks (None: fresh ones).
    """

    offset: int
    divergence: Divergence
    nce_weight: float = 1.0
    soft_weight: float = 0.0
    re_weight: float | torch.Tensor | None = None
    workspace: Workspace | None = None


def _softmax_backward_(grad_log_p: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """d/dZ from d/d log P for log P = log_softmax(Z): g - p · sum(g), in place. Shapes: [R, C]."""
    return grad_log_p.addcmul_(p, grad_log_p.sum(1, keepdim=True), value=-1.0)


def _off_targets(
    y: torch.Tensor, log_y: torch.Tensor, offset: int, ws: Workspace, scratch: torch.Tensor
) -> TargetRows:
    """Ỹ: Y without its diagonal, renormalised; log Ỹ from the exact log Y (no new logarithm)."""
    shape = (y.shape[0], y.shape[1] - 1)
    y_off = _drop_diagonal(y, offset, out=ws.get("y_off", shape, y))
    mass = y_off.sum(1, keepdim=True)
    mass = torch.where(mass > 0, mass, torch.ones_like(mass))
    log_off = _drop_diagonal(log_y, offset, out=ws.get("log_off", shape, y)).sub_(mass.log())
    compact = scratch.view(-1)[: shape[0] * shape[1]].view(shape)
    return TargetRows.from_log(y_off.div_(mass), log_off, compact)


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
    rows, grad = spec.divergence(target, log_p, p, need, compact)
    value = torch.where(keep, rows, torch.zeros_like(rows)).sum()
    if not need:
        return value, None
    grad = _softmax_backward_(grad, p)
    return value, grad.index_fill_(0, (~keep).nonzero().squeeze(1), 0.0)


class _DirectionTerms(torch.autograd.Function):
    """(total, nce, soft, re_sum, pos_mass, neg_entropy) of one direction; only ``total`` is differentiable."""

    @staticmethod
    def forward(ctx, z, y, keep, spec: DirectionSpec):  # type: ignore[override]
        need = ctx.needs_input_grad[0]
        ws = spec.workspace or Workspace(enabled=False)
        n = z.shape[0]
        log_p = torch.log_softmax(z, dim=1, out=ws.get("lp", z.shape, z))
        p = torch.exp(log_p)  # becomes the gradient block saved for backward
        nce = F.nll_loss(log_p, positives(n, spec.offset, z.device))
        pos_mass = p.diagonal(spec.offset).mean()
        zero = z.new_zeros(())
        soft = re_sum = neg_entropy = zero
        grad_soft = grad_re = off = off_probs = dz = None
        if y is not None:
            scratch = ws.get("scratch", z.shape, z)
            log_y = exact_log(y, out=ws.get("log_y", z.shape, z))
            off = _off_targets(y, log_y, spec.offset, ws, scratch) if spec.re_weight is not None else None
            full = TargetRows.from_log(y, log_y, scratch)
            neg_entropy = full.neg_entropy.mean()
            off_probs = _off_log_probs(z, log_p, p, spec.offset, ws) if off is not None else None  # p still P
            if spec.soft_weight > 0:
                rows, grad = spec.divergence(full, log_p, p, need, scratch)
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
        return dz * g_total, None, None, None


def direction_terms(
    logits: torch.Tensor, y: torch.Tensor | None, keep: torch.Tensor | None, spec: DirectionSpec
) -> tuple[torch.Tensor, ...]:
    """All terms of one direction from one ``log_softmax``.

    Args:
        logits: [N_l, N_g] (float32 or float64).
        y: [N_l, N_g] target rows (no gradient; read only), or None (identity: only InfoNCE is computed).
        keep: [N_l] bool from :func:`off_diagonal_keep` when ``spec.re_weight`` is set.
        spec: offset, divergence, weights, workspace.

    Returns:
        (total, nce, soft, re_sum, pos_mass, neg_entropy): total = w_nce·nce + w_soft·soft + w_re·re_sum is the
        only differentiable output; nce and soft are means over rows, re_sum the sum of D(Ỹ || P̃) over kept rows,
        pos_mass the mean predicted probability of the positive, neg_entropy the mean of sum_j y log y.
    """
    _check_block(logits.shape, spec.offset)
    if y is None:
        spec = DirectionSpec(spec.offset, spec.divergence, spec.nce_weight, 0.0, None, spec.workspace)
    elif spec.re_weight is not None and (keep is None or logits.shape[1] < 2):
        raise ValueError("the relation-enhanced term needs N_g >= 2 and the kept rows (off_diagonal_keep)")
    return _DirectionTerms.apply(logits, y, keep, spec)


def info_nce(logits: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """CE(Z, I): mean over rows of -log softmax(Z)[i, offset + i]. Shapes: [N_l, N_g] -> scalar."""
    return F.cross_entropy(logits, positives(logits.shape[0], offset, logits.device))


def soft_loss(logits: torch.Tensor, y: torch.Tensor, divergence: Divergence, offset: int = 0) -> torch.Tensor:
    """Mean over rows of D(Y || softmax(Z)), differentiable. Shapes: logits, y [N_l, N_g] -> scalar."""
    spec = DirectionSpec(offset, divergence, nce_weight=0.0, soft_weight=1.0)
    return direction_terms(logits, y, None, spec)[0]


def relation_enhanced_sums(
    logits: torch.Tensor, y: torch.Tensor, divergence: Divergence, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disentangled negatives of one direction.

    Args:
        logits: [N_l, N_g] logits (N_g >= 2).
        y: [N_l, N_g] target rows (no gradient).
        divergence: a :data:`DIVERGENCES` entry.
        offset: global column of local row 0's diagonal.

    Returns:
        (sum over kept rows of D(Ỹ || P̃) (differentiable), number of kept rows as a float tensor).
    """
    keep = off_diagonal_keep(y.detach().clone(), offset)
    spec = DirectionSpec(offset, divergence, nce_weight=0.0, re_weight=1.0)
    return direction_terms(logits, y, keep, spec)[0], keep.sum().to(logits.dtype)


def roi_info_nce_sums(
    image_side: tuple[torch.Tensor, torch.Tensor],
    text_side: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    offset: int,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between aggregated ROI features and tag features, over samples with both sides.

    Invalid samples are removed from rows and columns alike (no padding logits, hence no -inf anywhere).

    Args:
        image_side: (local [N_l, a], global [N_g, a]) normalised ROI features (gradient flows).
        text_side: (local [N_l, a], global [N_g, a]) normalised tag features (detached by the caller).
        valid: (local [N_l], global [N_g]) bool, both masks True.
        offset: global index of local row 0.
        scale: scalar logit multiplier.

    Returns:
        (½ sum over valid local rows of [CE_i2t + CE_t2i], number of valid local rows as a float tensor).
    """
    (img_l, img_g), (txt_l, txt_g), (valid_l, valid_g) = image_side, text_side, valid
    # position of each valid local sample among the valid global ones
    rank_in_valid = torch.cumsum(valid_g.long(), 0) - 1
    labels = rank_in_valid[offset : offset + valid_l.shape[0]][valid_l]
    logits_i2t = scale * img_l[valid_l] @ txt_g[valid_g].T
    logits_t2i = scale * txt_l[valid_l] @ img_g[valid_g].T
    ce = F.cross_entropy(logits_i2t, labels, reduction="sum") + F.cross_entropy(
        logits_t2i, labels, reduction="sum"
    )
    return 0.5 * ce, valid_l.sum().to(ce.dtype)
