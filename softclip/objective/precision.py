"""Target precision: how much of a soft target's off-diagonal mass lands on pairs that truly match.

On SynthScenes the generator's scene annotations say which captions truly describe which images
(:mod:`softclip.objective.oracle`). For a target row Y_i (log Y [N_l, N_g], any target: label smoothing,
self-similarity, momentum, the oracle at any ``loss.oracle_precision``) its *target precision* is

    prec_i = Σ_{j ≠ i, rel_ij} y_ij / Σ_{j ≠ i} y_ij

(β cancels), defined for rows with off-diagonal mass; a direction's precision is the mean over those rows
(NaN when no row has any). The uninformative level is the batch's *true share*: the fraction of off-diagonal
pairs (i, j) that truly match, which is exactly the precision of uniform smoothing over every off-diagonal column
(label smoothing without masks). Both are diagnostics: no gradient, computed in log space so that entries below
float range still count (DESIGN 'Numerics').
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _off_diagonal(shape: torch.Size, offset: int, device: torch.device) -> torch.Tensor:
    mask = torch.ones(shape, dtype=torch.bool, device=device)
    mask.diagonal(offset).fill_(False)
    return mask


@torch.no_grad()
def target_precision(log_y: torch.Tensor, relevant: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Mean over rows with off-diagonal mass of the share of that mass on true matches.

    Args:
        log_y: [N_l, N_g] log target rows (−inf for zeros); not modified.
        relevant: [N_l, N_g] bool, True where the row's sample and the column's truly match.
        offset: global column of local row 0's diagonal.

    Returns:
        0-dim tensor of ``log_y``'s dtype; NaN when no row has off-diagonal mass.
    """
    off = _off_diagonal(log_y.shape, offset, log_y.device)
    lo = log_y.masked_fill(~off, NEG_INF)
    total = torch.logsumexp(lo, dim=1)
    true = torch.logsumexp(lo.masked_fill(~relevant, NEG_INF), dim=1)
    has = total > NEG_INF
    ratio = torch.where(has, (true - total.masked_fill(~has, 0.0)).exp(), 0.0)
    return ratio.sum() / has.sum().to(ratio.dtype)  # 0 / 0 = NaN without rows; no host sync on an accelerator


@torch.no_grad()
def true_share(relevant: torch.Tensor, offset: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fraction of the off-diagonal pairs of ``relevant`` [N_l, N_g] that truly match (0-dim; NaN for N_g = 1)."""
    off = _off_diagonal(relevant.shape, offset, relevant.device)
    return (relevant & off).sum().to(dtype) / off.sum().to(dtype)  # 0 / 0 = NaN for N_g = 1
