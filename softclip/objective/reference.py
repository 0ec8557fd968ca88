"""The SoftCLIP objective's loss terms, one direction at a time, in plain autograd: the executable definition.

Notation (DESIGN.md, 'The SoftCLIP objective'; arXiv 2303.17561). One direction is a block of logits
Z = s·U Vᵀ (i2t; t2i uses Zᵀ's counterpart s·V Uᵀ) of shape [N_l, N_g]: local row i has its positive at global
column ``offset + i`` (one process: N_l = N_g, offset 0). P = softmax(Z) over rows. The target Y comes in as
log Y (:mod:`softclip.objective.targets`), rows of log-probabilities, −inf for exact zeros.

- InfoNCE       L_nce  = −(1/N_l) Σ_i log P_{i,i}                           (open_clip's ``ClipLoss`` per direction)
- soft loss     L_soft =  (1/N_l) Σ_i D(Y_i ‖ P_i)
- disentangled  L_re   =  Σ_{i kept} D(Ỹ_i ‖ P̃_i)   (the caller divides by the global number of kept rows)
  where Ỹ_i, P̃_i drop the diagonal entry and renormalise, both in log space:
  log Ỹ_i = log Y_i,off − logsumexp(log Y_i,off), log P̃_i = log_softmax(Z_i,off). A row is kept when Y_i has
  off-diagonal mass.
- divergences D(Y ‖ P), ``loss.divergence``:
  ``kl``     Σ_j y_j (log y_j − log p_j), with 0·log 0 = 0;
  ``symkl``  KL(Y ‖ P) + KL(P ‖ Y), the reverse term Σ_j p_j (log p_j − log max(y_j, floor)) with the floor
             ``loss.reverse_floor`` (KL(P ‖ Y) is +∞ wherever y_j = 0 < p_j; the floor caps each such entry at
             −log(floor)·p_j, about 18.4·p_j at 1e-8);
  ``ce``     −Σ_j y_j log p_j.
  The RE term takes ``loss.re_divergence`` (None: the same as ``loss.divergence``), so the divergence of L_soft
  and of L_re can be ablated apart (symmetric KL roughly doubles the RE term's gradient).
- one-hot rows, ``loss.one_hot_rows``: on a target row with a single nonzero entry (hard targets, samples
  without regions or tags) the reverse term is nothing but the floor, 18.4·(1 − p_ii) per row; ``forward``
  (default) drops it there, so D is the forward term, which equals that row's InfoNCE; ``floored`` keeps it.

Only ``total`` = w_nce·L_nce + w_soft·L_soft + w_re·L_re carries gradient; the terms come back detached.
The ROI<->tag InfoNCE (:func:`roi_info_nce_sums`) is here too, as is which rows L_re keeps
(:func:`off_diagonal_rows`).

Everything here is plain autograd on fresh tensors: no scratch blocks, no ``out=``, nothing in place.
:mod:`softclip.objective.losses` is the fused path (``loss.impl: fused``) with the same contract and its own
helpers, tested equal to this one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ONE_HOT_RULES = ("forward", "floored")


@dataclass(frozen=True)
class DirectionSpec:
    """What one direction computes (both implementations take it).

    Attributes:
        offset: global column of local row 0's positive.
        divergence: a ``loss.divergence`` name.
        reverse_floor: ``loss.reverse_floor``, the floor of y inside the reverse KL term.
        one_hot_rows: ``loss.one_hot_rows`` (:data:`ONE_HOT_RULES`).
        nce_weight: weight of L_nce in ``total``.
        soft_weight: weight of L_soft (0: not computed).
        re_weight: weight of the L_re row sum (None: not computed; a 0-dim tensor is fine).
        re_divergence: the relation-enhanced term's divergence name; None: ``divergence``.
    """

    offset: int
    divergence: str
    reverse_floor: float
    one_hot_rows: str
    nce_weight: float = 1.0
    soft_weight: float = 0.0
    re_weight: float | torch.Tensor | None = None
    re_divergence: str | None = None

    @property
    def re_div(self) -> str:
        """The divergence of the relation-enhanced term."""
        return self.divergence if self.re_divergence is None else self.re_divergence


def positives(n_local: int, offset: int, device: torch.device) -> torch.Tensor:
    """[N_l] int64 global column of each local row's positive."""
    return torch.arange(offset, offset + n_local, device=device)


def off_diagonal_mask(shape: torch.Size, offset: int, device: torch.device) -> torch.Tensor:
    """[N_l, N_g] bool, False at (i, offset + i)."""
    rows = torch.arange(shape[0], device=device).unsqueeze(1)
    return torch.arange(shape[1], device=device).unsqueeze(0) != rows + offset


def off_diagonal_rows(log_y: torch.Tensor, offset: int) -> torch.Tensor:
    """[N_l] bool: the rows L_re keeps, those of Y with off-diagonal mass (some off-diagonal log Y > −inf, so a
    probability below float range still counts)."""
    return ((log_y > float("-inf")) & off_diagonal_mask(log_y.shape, offset, log_y.device)).any(dim=1)


def _kl(log_y: torch.Tensor, log_p: torch.Tensor, spec: DirectionSpec) -> torch.Tensor:
    y = log_y.exp()
    return (torch.where(y > 0, y * log_y, 0.0) - y * log_p).sum(1)  # 0·log 0 = 0


def _symkl(log_y: torch.Tensor, log_p: torch.Tensor, spec: DirectionSpec) -> torch.Tensor:
    reverse = (log_p.exp() * (log_p - log_y.clamp_min(math.log(spec.reverse_floor)))).sum(1)
    if spec.one_hot_rows == "forward":
        reverse = torch.where(torch.isfinite(log_y).sum(1) == 1, 0.0, reverse)
    return _kl(log_y, log_p, spec) + reverse


def _ce(log_y: torch.Tensor, log_p: torch.Tensor, spec: DirectionSpec) -> torch.Tensor:
    return -(log_y.exp() * log_p).sum(1)


# rows of D(Y ‖ P): log Y, log P [R, C] -> [R]; names match the fused path's DIVERGENCES (a test checks)
DIVERGENCE_ROWS: dict[str, Callable[[torch.Tensor, torch.Tensor, DirectionSpec], torch.Tensor]] = {
    "kl": _kl, "symkl": _symkl, "ce": _ce,
}  # fmt: skip


def divergence_rows(
    log_y: torch.Tensor, log_p: torch.Tensor, spec: DirectionSpec, name: str | None = None
) -> torch.Tensor:
    """D(Y_r ‖ P_r) per row: log_y, log_p [R, C] -> [R] (differentiable in log_p); ``name`` (default
    ``spec.divergence``) picks D."""
    return DIVERGENCE_ROWS[spec.divergence if name is None else name](log_y, log_p, spec)


def direction_terms(
    logits: torch.Tensor, log_y: torch.Tensor | None, keep: torch.Tensor | None, spec: DirectionSpec
) -> tuple[torch.Tensor, ...]:
    """All terms of one direction.

    Args:
        logits: [N_l, N_g] Z.
        log_y: [N_l, N_g] log Y (no gradient), or None (Y = I: only InfoNCE is computed).
        keep: [N_l] bool, rows with off-diagonal target mass, when ``spec.re_weight`` is set.
        spec: offset, divergence, weights, floor and one-hot rule.

    Returns:
        (total, nce, soft, re_sum, pos_mass, neg_entropy): total = w_nce·nce + w_soft·soft + w_re·re_sum is the
        only differentiable output; nce and soft are means over rows, re_sum the sum of D(Ỹ ‖ P̃) over kept rows,
        pos_mass the mean of P_ii, neg_entropy the mean over rows of Σ_j y log y.
    """
    n, offset = logits.shape[0], spec.offset
    log_p = torch.log_softmax(logits, dim=1)
    nce = F.nll_loss(log_p, positives(n, offset, logits.device))
    total, zero = spec.nce_weight * nce, logits.new_zeros(())
    soft = re_sum = neg_entropy = zero
    if log_y is not None:
        y = log_y.exp()
        neg_entropy = torch.where(y > 0, y * log_y, 0.0).sum(1).mean()
        if spec.soft_weight > 0:
            soft = divergence_rows(log_y, log_p, spec).mean()
            total = total + spec.soft_weight * soft
        if spec.re_weight is not None:
            off = off_diagonal_mask(logits.shape, offset, logits.device)
            log_y_off = log_y[off].view(n, -1)[keep]
            log_y_tilde = log_y_off - torch.logsumexp(log_y_off, dim=1, keepdim=True)
            log_p_tilde = torch.log_softmax(logits[off].view(n, -1)[keep], dim=1)
            re_sum = divergence_rows(log_y_tilde, log_p_tilde, spec, spec.re_div).sum()
            total = total + spec.re_weight * re_sum
    pos_mass = log_p.detach().diagonal(offset).exp().mean()
    return (total, nce.detach(), soft.detach(), re_sum.detach(), pos_mass, neg_entropy)


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


class ReferencePath:
    """``loss.impl: reference``: :func:`direction_terms`, the kept rows from :func:`off_diagonal_rows`, and fresh
    target blocks (no scratch)."""

    terms = staticmethod(direction_terms)
    kept_rows = staticmethod(off_diagonal_rows)

    @staticmethod
    def target_blocks(like: torch.Tensor) -> None:
        return None
