"""Soft targets Y (``loss.target``) and how the two sides pair with the two directions (``loss.pairing``).

A target is ``Y = (1 - β) I + β Q`` where Q is the target's *smoothing distribution*. Every target is a function
of one side (image side A or text side B) with the same contract::

    q = TARGETS.get(name)(side: SideView, tau: float, out: Tensor | None = None)   # -> [N_l, N_g] or None

returning, for each local row, a distribution over the global columns (None means "no smoothing": Y = I), as a
tensor the caller may overwrite (``out`` when given: a scratch block it may use) or as an expanded view.
Rows of local samples cover global columns (distributed: local rows, all-gathered columns); the diagonal of
local row i is global column ``offset + i``.

Masks (DESIGN.md): a sample whose side is missing (no regions / no tags) is masked out of every distribution
over that side, so no target mass lands on its column, and its own row is one-hot. Masks apply to every target,
label smoothing included (its uniform mass then spreads over the valid columns only, 1/N_valid; with no mask it
is exactly β/N with N the global batch), so that label smoothing and self-similarity compare on the same support.

A pairing maps the two sides' (Q, row validity) to the two directions::

    (q_i2t, valid_i2t), (q_t2i, valid_t2i) = PAIRINGS.get(name)((q_a, valid_a), (q_b, valid_b))

returning two distinct tensors (the targets are composed in place).

``same``: i2t from A, t2i from B. ``cross``: swapped. ``mean``: both directions use the row-wise average of the
two distributions; where only one side is valid for a row that side's distribution is used alone, and a row
valid on neither side is one-hot. Its columns may then receive mass from the valid side only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from softclip.registry import Registry


@dataclass(frozen=True)
class SideView:
    """One side's intra-modal features as a target sees them (normalised, detached).

    Attributes:
        rows: [N_l, a] features of the local samples (the target rows).
        cols: [N_g, a] features of the global batch (the target columns); ``rows`` in one process.
        row_valid: [N_l] bool, or None when every sample is valid.
        col_valid: [N_g] bool, or None when every sample is valid.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    row_valid: torch.Tensor | None = None
    col_valid: torch.Tensor | None = None


Target = Callable[..., "torch.Tensor | None"]  # (side, tau, out=None)
Side = tuple["torch.Tensor | None", "torch.Tensor | None"]  # (Q [N_l, N_g] or None, row_valid [N_l] or None)
Pairing = Callable[[Side, Side], tuple[Side, Side]]

TARGETS: Registry[Target] = Registry("loss.target")
PAIRINGS: Registry[Pairing] = Registry("loss.pairing")


def list_targets() -> list[str]:
    """Registered target names."""
    return TARGETS.names()


def list_pairings() -> list[str]:
    """Registered pairing names."""
    return PAIRINGS.names()


@TARGETS.register("hard")
def hard_target(side: SideView, tau: float, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """Plain CLIP: no smoothing, Y = I whatever β."""
    return None


@TARGETS.register("label_smoothing")
def label_smoothing_target(side: SideView, tau: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform over the valid global columns: Q = 11ᵀ / N_valid (N_valid = N_g without masks).

    Returns:
        [N_l, N_g], an expanded view of one fresh row.
    """
    n_local, n_global = side.rows.shape[0], side.cols.shape[0]
    like = side.cols.new_ones(n_global) if side.col_valid is None else side.col_valid.to(side.cols.dtype)
    q = like / like.sum().clamp_min(1.0)
    return q.unsqueeze(0).expand(n_local, n_global)


@TARGETS.register("selfsim")
def selfsim_target(side: SideView, tau: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Intra-modal self-similarity: Q = softmax(rows · colsᵀ / τ) over the valid columns.

    Returns:
        [N_l, N_g]; rows of invalid samples hold anything finite (they become one-hot in :func:`compose_target`).
    """
    q = torch.matmul(side.rows / tau, side.cols.T, out=out)
    if side.col_valid is not None:
        q.masked_fill_(~side.col_valid.unsqueeze(0), float("-inf"))
    # softmax in place (one [N_l, N_g] block for the whole target)
    q.sub_(q.amax(dim=1, keepdim=True)).exp_()
    q.div_(q.sum(dim=1, keepdim=True))
    if side.col_valid is not None:
        q.nan_to_num_(0.0)  # a row sees only -inf when no column is valid; such a row is never valid itself
    return q


def compose_target(
    q: torch.Tensor | None, beta: float, row_valid: torch.Tensor | None, offset: int
) -> torch.Tensor | None:
    """Y = (1 - β) I + β Q, with invalid rows one-hot.

    Args:
        q: [N_l, N_g] smoothing distribution, or None for Y = I.
        beta: β in [0, 1].
        row_valid: [N_l] bool or None (all valid).
        offset: global column of local row 0's diagonal.

    Returns:
        [N_l, N_g] target rows summing to 1, or None meaning the identity (no smoothing, or β = 0).
    """
    if q is None or beta == 0:
        return None
    y = q.mul_(beta) if q.is_contiguous() else q * beta  # targets hand over fresh blocks or expanded views
    y.diagonal(offset).add_(1.0 - beta)
    if row_valid is not None:
        bad = (~row_valid).nonzero().squeeze(1)
        y.index_fill_(0, bad, 0.0)
        y[bad, bad + offset] = 1.0
    return y


@PAIRINGS.register("same")
def same_pairing(side_a: Side, side_b: Side) -> tuple[Side, Side]:
    """i2t targets from the image side A, t2i targets from the text side B."""
    return side_a, side_b


@PAIRINGS.register("cross")
def cross_pairing(side_a: Side, side_b: Side) -> tuple[Side, Side]:
    """i2t targets from the text side B, t2i targets from the image side A."""
    return side_b, side_a


@PAIRINGS.register("mean")
def mean_pairing(side_a: Side, side_b: Side) -> tuple[Side, Side]:
    """Both directions use the average of A's and B's distributions (one side alone where only it is valid)."""
    (q_a, valid_a), (q_b, valid_b) = side_a, side_b
    if q_a is None or q_b is None:
        # one side without smoothing (never happens with a single target function): use the other one
        only = side_a if q_b is None else side_b
        return only, only
    if valid_a is None and valid_b is None:
        q = (q_a + q_b).mul_(0.5)
        return (q, None), (q.clone(), None)
    ones = q_a.new_ones(q_a.shape[0])
    w_a = ones if valid_a is None else valid_a.to(q_a.dtype)
    w_b = ones if valid_b is None else valid_b.to(q_b.dtype)
    total = w_a + w_b
    q = (q_a * w_a.unsqueeze(1) + q_b * w_b.unsqueeze(1)).div_(total.clamp_min(1.0).unsqueeze(1))
    return (q, total > 0), (q.clone(), total > 0)


def build_targets(
    side_a: SideView,
    side_b: SideView,
    target: str,
    pairing: str,
    beta: float,
    tau: float,
    offset: int,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Targets of both directions.

    Args:
        side_a: image side (rows: local images; columns: global images).
        side_b: text side.
        target: a :data:`TARGETS` name.
        pairing: a :data:`PAIRINGS` name.
        beta: β. tau: τ, the self-similarity temperature.
        offset: global column of local row 0's diagonal.
        out: optional two [N_l, N_g] scratch blocks the targets of A and B may be built in.

    Returns:
        (Y_i2t, Y_t2i), each [N_l, N_g] with rows summing to 1, or None for the identity.
    """
    if beta == 0:
        return None, None
    fn = TARGETS.get(target)
    out_a, out_b = (None, None) if out is None else out
    with torch.no_grad():
        q_a, q_b = fn(side_a, tau, out=out_a), fn(side_b, tau, out=out_b)
        (q_i2t, v_i2t), (q_t2i, v_t2i) = PAIRINGS.get(pairing)(
            (q_a, side_a.row_valid), (q_b, side_b.row_valid)
        )
        return compose_target(q_i2t, beta, v_i2t, offset), compose_target(q_t2i, beta, v_t2i, offset)
