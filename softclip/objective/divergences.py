"""Row-wise divergences D(Y || P) between a target and a prediction (``loss.divergence``).

Every divergence has the same contract::

    rows, grad = DIVERGENCES.get(name)(target: TargetRows, log_p, p, need_grad, scratch)
    # rows [R]: one value per row; grad [R, C]: d rows[r] / d log_p[r, c], or None when not needed

``target`` holds the target rows Y (each sums to 1, or is all zeros for rows the caller leaves out), their
floored logarithm and their negative entropy, prepared once per target. ``log_p`` [R, C] holds log-probabilities
from ``log_softmax`` of logits (never ``log`` of a softmax), ``p = exp(log_p)``. The derivative is taken with
respect to ``log_p`` with p counted as exp(log_p); the caller turns it into the gradient of the logits (softmax
backward). ``scratch`` is an [R, C] buffer for row dot products; a divergence may overwrite it and
``target.log_y``, and its derivative may live in either: callers prepare both for one call and consume the
derivative before reusing them. Value and
derivative come together so that a divergence shares its temporaries and allocates nothing of size [R, C]; the
tests check every registered derivative against finite differences and the values against plain formulas.

Conventions (DESIGN.md): 0·log 0 = 0 (the entropy uses log y clamped at the log of the smallest normal number,
so y·log y is exactly 0 where y = 0, as ``torch.xlogy``); the reverse term KL(P || Y) takes
log(max(Y, floor)) with the floor ``loss.reverse_floor``, so that targets with exact zeros (hard targets, masked
columns) stay finite; on rows with a single nonzero entry ``loss.one_hot_rows: forward`` drops the reverse term
(``TargetRows.single``). :mod:`softclip.objective.reference` states the same definitions in plain autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from softclip.registry import Registry


@dataclass(frozen=True)
class TargetRows:
    """Target rows prepared for the divergences (no gradient).

    Attributes:
        y: [R, C] rows summing to 1 (or all-zero rows).
        log_y: [R, C] log(max(y, floor)), the target side of the reverse KL term (a divergence may overwrite it).
        neg_entropy: [R] sum_j y_j log y_j with 0·log 0 = 0.
        single: [R] bool, rows whose reverse term is dropped (one nonzero entry), or None for none.
    """

    y: torch.Tensor
    log_y: torch.Tensor
    neg_entropy: torch.Tensor
    single: torch.Tensor | None = None

    @classmethod
    def from_log(
        cls, y: torch.Tensor, log_y: torch.Tensor, scratch: torch.Tensor, floor: float, mark_single: bool
    ) -> TargetRows:
        """Build from y = exp(log_y) and log_y [R, C] (−inf for zeros), clamping ``log_y`` in place.

        Args:
            y: [R, C] exp(log_y).
            log_y: [R, C] log-probabilities; becomes log(max(y, floor)).
            scratch: [R, C] buffer for the entropy's products.
            floor: the reverse term's floor (``loss.reverse_floor``).
            mark_single: find the rows with a single nonzero entry (``loss.one_hot_rows: forward``).
        """
        single = (torch.isfinite(log_y).sum(1) == 1) if mark_single else None
        log_y.clamp_min_(math.log(torch.finfo(log_y.dtype).tiny))  # finite, so that 0·log y = 0
        neg_entropy = rowdot(y, log_y, scratch)
        return cls(y, log_y.clamp_min_(math.log(floor)), neg_entropy, single)


def rowdot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """sum_j a[r, j] b[r, j] -> [R], using ``scratch`` [R, C] for the products (no allocation of that size)."""
    return torch.mul(a, b, out=scratch).sum(-1)


Divergence = Callable[
    [TargetRows, torch.Tensor, torch.Tensor, bool, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]
]
DIVERGENCES: Registry[Divergence] = Registry("loss.divergence")


def list_divergences() -> list[str]:
    """Registered divergence names (feeds config validation, CLI help and tests)."""
    return DIVERGENCES.names()


@DIVERGENCES.register("kl")
def kl_divergence(
    target: TargetRows, log_p: torch.Tensor, p: torch.Tensor, need_grad: bool, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL(Y || P) = sum_j y_j (log y_j - log p_j) per row; d/d log p = -y.

    Args:
        target: prepared target rows [R, C].
        log_p: [R, C] predicted log-probabilities.
        p: [R, C] exp(log_p).
        need_grad: also return the derivative with respect to log_p.
        scratch: [R, C] buffer.

    Returns:
        rows [R], derivative [R, C] (in ``target.log_y``'s storage) or None.
    """
    rows = target.neg_entropy - rowdot(target.y, log_p, scratch)
    return rows, (torch.neg(target.y, out=target.log_y) if need_grad else None)


@DIVERGENCES.register("symkl")
def symmetric_kl_divergence(
    target: TargetRows, log_p: torch.Tensor, p: torch.Tensor, need_grad: bool, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL(Y || P) + KL(P || Y) per row (the project default); d/d log p = p (log p - log max(y, floor) + 1) - y.

    The reverse term is sum_j p_j (log p_j - log max(y_j, floor)); p log p is 0 where p underflows to 0. Rows in
    ``target.single`` keep only the forward term (value and derivative).

    Args:
        target: prepared target rows [R, C].
        log_p: [R, C] predicted log-probabilities.
        p: [R, C] exp(log_p).
        need_grad: also return the derivative with respect to log_p.
        scratch: [R, C] buffer.

    Returns:
        rows [R], derivative [R, C] (in ``scratch``) or None.
    """
    gap = torch.sub(log_p, target.log_y, out=target.log_y)
    weighted = torch.mul(p, gap, out=scratch)  # p (log p - log max(y, 1e-8)), also half of the derivative
    reverse = weighted.sum(-1)
    if target.single is not None:
        reverse.masked_fill_(target.single, 0.0)
    cross = torch.mul(target.y, log_p, out=target.log_y).sum(-1)
    rows = target.neg_entropy - cross + reverse
    if not need_grad:
        return rows, None
    weighted.add_(p)
    if target.single is not None:
        weighted.index_fill_(0, target.single.nonzero().squeeze(1), 0.0)
    return rows, weighted.sub_(target.y)


@DIVERGENCES.register("ce")
def cross_entropy_divergence(
    target: TargetRows, log_p: torch.Tensor, p: torch.Tensor, need_grad: bool, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cross-entropy H(Y, P) = -sum_j y_j log p_j per row (KL(Y || P) plus the target entropy); d/d log p = -y.

    Args:
        target: prepared target rows [R, C].
        log_p: [R, C] predicted log-probabilities.
        p: [R, C] exp(log_p).
        need_grad: also return the derivative with respect to log_p.
        scratch: [R, C] buffer.

    Returns:
        rows [R], derivative [R, C] (in ``target.log_y``'s storage) or None.
    """
    rows = -rowdot(target.y, log_p, scratch)
    return rows, (torch.neg(target.y, out=target.log_y) if need_grad else None)
