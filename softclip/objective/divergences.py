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

Conventions (DESIGN.md): 0·log 0 = 0 (the entropy uses the exact logarithm, floored at the smallest normal
number, so y·log y is exactly 0 where y = 0, as ``torch.xlogy``); the reverse term KL(P || Y) takes
log(max(Y, 1e-8)) so that targets with exact zeros (hard targets, masked columns) stay finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from softclip.registry import Registry

LOG_FLOOR = 1e-8  # the reverse KL term uses log(max(y, LOG_FLOOR))
_LOG_LOG_FLOOR = math.log(LOG_FLOOR)


@dataclass(frozen=True)
class TargetRows:
    """Target rows prepared for the divergences (no gradient).

    Attributes:
        y: [R, C] rows summing to 1 (or all-zero rows).
        log_y: [R, C] log(max(y, 1e-8)), the target side of the reverse KL term (a divergence may overwrite it).
        neg_entropy: [R] sum_j y_j log y_j with 0·log 0 = 0.
    """

    y: torch.Tensor
    log_y: torch.Tensor
    neg_entropy: torch.Tensor

    @classmethod
    def from_log(cls, y: torch.Tensor, log_y_exact: torch.Tensor, scratch: torch.Tensor) -> TargetRows:
        """Build from y and its :func:`exact_log`; floors ``log_y_exact`` in place and uses ``scratch`` [R, C]."""
        neg_entropy = rowdot(y, log_y_exact, scratch)
        return cls(y, log_y_exact.clamp_min_(_LOG_LOG_FLOOR), neg_entropy)

    @classmethod
    def from_probs(cls, y: torch.Tensor) -> TargetRows:
        """Build from target rows y [R, C] (fresh buffers)."""
        return cls.from_log(y, exact_log(y), torch.empty_like(y))


def exact_log(y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """log(max(y, smallest normal)): the exact log where y > 0 (denormals aside), finite where y = 0."""
    return torch.clamp_min(y, torch.finfo(y.dtype).tiny, out=out).log_()


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
    """KL(Y || P) + KL(P || Y) per row (the project default); d/d log p = p (log p - log max(y, 1e-8) + 1) - y.

    The reverse term is sum_j p_j (log p_j - log max(y_j, 1e-8)); p log p is 0 where p underflows to 0.

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
    cross = torch.mul(target.y, log_p, out=target.log_y).sum(-1)
    rows = target.neg_entropy - cross + reverse
    return rows, (weighted.add_(p).sub_(target.y) if need_grad else None)


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
