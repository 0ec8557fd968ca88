"""Soft targets Y (``loss.target``) and how the two sides pair with the two directions (``loss.pairing``).

Every target is formed **as log-probabilities** (DESIGN.md, 'Numerics'): at small τ most entries of
softmax(AAᵀ/τ) are far below float32's smallest number, so a linear-space target loses them, and with them the
whole off-diagonal mass that the disentangled-negatives term renormalises. In log space they stay finite
(log Q = AAᵀ/τ − logsumexp), exact zeros are −inf, and β is mixed in with ``logaddexp``.

A target is ``Y = (1 − β) I + β Q`` where Q is the target's *smoothing distribution*. Every target is a function
of one side (image side A or text side B) with the same contract::

    log_q = TARGETS.get(name)(side: SideView, tau: float, out: Tensor | None = None)  # -> [N_l, N_g] or None

returning, for each local row, log-probabilities over the global columns (None means "no smoothing": Y = I), as a
tensor the caller may overwrite (``out`` when given: a scratch block it may use) or as an expanded view.
Rows of local samples cover global columns (distributed: local rows, all-gathered columns); the diagonal of
local row i is global column ``offset + i``.

Masks (DESIGN.md): a sample whose side is missing (no regions / no tags) is masked out of every distribution
over that side (log Q = −inf on its column), and its own row is one-hot. Masks apply to every target, label
smoothing included (its uniform mass then spreads over the valid columns only, 1/N_valid; with no mask it is
exactly β/N with N the global batch), so that label smoothing and self-similarity compare on the same support.

A pairing maps the two sides' (log Q, row validity) to the two directions::

    (lq_i2t, valid_i2t), (lq_t2i, valid_t2i) = PAIRINGS.get(name)((lq_a, valid_a), (lq_b, valid_b))

``same``: i2t from A, t2i from B. ``cross``: swapped. ``mean``: both directions use the row-wise average of the
two distributions; where only one side is valid for a row that side's distribution is used alone, and a row
valid on neither side is one-hot. Its columns may then receive mass from the valid side only.

Off-diagonal mass (``softclip.objective.reference.off_diagonal_rows``, the fused path's in-place
``losses.off_diagonal_mass``) is decided in log space: a row has it when some off-diagonal log Y is finite, so a
probability below float range still counts and no row is dropped for underflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from softclip.registry import Registry

NEG_INF = float("-inf")


@dataclass(frozen=True)
class SideView:
    """One side's intra-modal features as a target sees them (normalised, detached).

    Attributes:
        rows: [N_l, a] features of the local samples (the target rows).
        cols: [N_g, a] features of the global batch (the target columns); ``rows`` in one process.
        row_valid: [N_l] bool, or None when every sample is valid.
        col_valid: [N_g] bool, or None when every sample is valid.
        relevant: [N_l, N_g] bool, which global samples of the *other* modality truly match each local row
            (:mod:`softclip.objective.oracle`), for the ``oracle`` target; None without scene annotations.
        offset: global column of local row 0's own sample (set by :func:`build_targets`).
        teacher_logits: [N_l, N_g] the EMA teacher's logits of each local row against the *other* modality's
            global batch (:mod:`softclip.objective.momentum`), for the ``momentum`` target; None without a teacher.
        oracle_precision: ``loss.oracle_precision`` of the ``oracle`` target: a fraction p in [0, 1] of its
            off-diagonal mass on true matches, or ``"share"`` (each row's share of true matches).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    row_valid: torch.Tensor | None = None
    col_valid: torch.Tensor | None = None
    relevant: torch.Tensor | None = None
    offset: int = 0
    teacher_logits: torch.Tensor | None = None
    oracle_precision: float | str = 1.0


Target = Callable[..., "torch.Tensor | None"]  # (side, tau, out=None)
Side = tuple["torch.Tensor | None", "torch.Tensor | None"]  # (log Q [N_l, N_g] or None, row_valid [N_l] or None)
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
    """Uniform over the valid global columns: log Q = −log N_valid there, −inf on masked columns.

    Returns:
        [N_l, N_g], an expanded view of one fresh row.
    """
    n_local, n_global = side.rows.shape[0], side.cols.shape[0]
    valid = side.cols.new_ones(n_global, dtype=torch.bool) if side.col_valid is None else side.col_valid
    log_n = math.log(max(int(valid.sum()), 1))
    row = torch.full((n_global,), -log_n, dtype=side.cols.dtype, device=side.cols.device)
    return row.masked_fill_(~valid, NEG_INF).unsqueeze(0).expand(n_local, n_global)


@TARGETS.register("selfsim")
def selfsim_target(side: SideView, tau: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Intra-modal self-similarity: log Q = log_softmax(rows · colsᵀ / τ) over the valid columns.

    Returns:
        [N_l, N_g]; rows of invalid samples hold anything (they become one-hot in :func:`compose_target`).
    """
    return _masked_log_softmax_(torch.matmul(side.rows / tau, side.cols.T, out=out), side.col_valid)


def _masked_log_softmax_(q: torch.Tensor, col_valid: torch.Tensor | None) -> torch.Tensor:
    """log_softmax of logits q [N_l, N_g] over the valid columns, in place (one block for the whole target)."""
    if col_valid is None:
        return torch.log_softmax(q, dim=1, out=q)
    q.masked_fill_(~col_valid.unsqueeze(0), NEG_INF)
    # a batch without any valid column gives all −inf rows, whose log_softmax is NaN: keep them −inf
    return torch.log_softmax(q, dim=1, out=q).nan_to_num_(nan=NEG_INF, neginf=NEG_INF)


@TARGETS.register("momentum")
def momentum_target(side: SideView, tau: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Momentum distillation (ALBEF): the EMA teacher's own cross-modal prediction, log Q = log_softmax(s·U_m V_mᵀ)
    over the valid columns for i2t (s·V_m U_mᵀ for t2i; ``side.teacher_logits``). τ is unused: the teacher's
    logits carry the student's scale s, as ALBEF's share its temperature.

    Raises:
        ValueError: without ``side.teacher_logits`` (the model has no EMA teacher).
    """
    if side.teacher_logits is None:
        raise ValueError("loss.target=momentum needs the EMA teacher's embeddings (image_teacher / text_teacher), "
                         "which a model built with loss.target=momentum computes")  # fmt: skip
    q = side.teacher_logits.clone() if out is None else out.copy_(side.teacher_logits)
    return _masked_log_softmax_(q, side.col_valid)


def check_oracle_precision(p: object) -> float | str:
    """``loss.oracle_precision``: a number in [0, 1] or ``"share"``; ValueError naming the key otherwise."""
    if p == "share" or (isinstance(p, int | float) and not isinstance(p, bool) and 0.0 <= p <= 1.0):
        return p  # type: ignore[return-value]
    raise ValueError(f"loss.oracle_precision={p!r} must be a number in [0, 1] or 'share'")


@TARGETS.register("oracle")
def oracle_target(side: SideView, tau: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """The positive control: uniform over the global samples of the other modality that truly match the row
    (``side.relevant``; the i2t row of image i spreads over the captions that describe it, the t2i row of
    caption j over the images it describes). A row that matches nothing (a noisy caption whose image no batch
    caption describes) is one-hot, as a masked row is. τ is unused.

    Precision knob (``side.oracle_precision`` = p; the calibration curve, DESIGN 'Calibration'). With T the
    row's valid true matches (its own column included when it matches), T' = T without the diagonal and F the
    valid off-diagonal non-matches, today's oracle puts 1/|T| on the diagonal (when it matches) and its
    off-diagonal mass m = |T'|/|T| on T'. Knob p keeps the diagonal and m and moves only where m goes: p·m
    uniformly over T' (p/|T| each) and (1 − p)·m uniformly over F. So p = 1 is today's oracle bit for bit
    (log 1 = 0 is added), p = 0 puts no off-diagonal mass on true matches, and ``"share"`` (p = |T'|/(|T'| + |F|)
    per row) spreads m uniformly over every valid off-diagonal column, i.e. uninformative smoothing.

    Rows where one set is empty (decided per row, so the measured target precision says what happened):
    * |T'| = 0 (the row matches only itself, or nothing): m = 0, no off-diagonal mass at any p (one-hot Q, as
      today), so p has nothing to move;
    * |F| = 0 (every valid column truly matches): the (1 − p)·m that has nowhere to go lands on T' too, so the
      row is today's oracle row (precision 1) whatever p.

    Computed in log space (DESIGN 'Numerics'): log Q_T' = log p − log|T|, log Q_F = log(1 − p) + log|T'| −
    log|T| − log|F|, exact zeros −inf.

    Raises:
        ValueError: without ``side.relevant`` (the data carries no scene annotations).
    """
    if side.relevant is None:
        raise ValueError("loss.target=oracle needs scene annotations (the batch's scene_image / scene_text "
                         "codes, which SynthScenes shards carry in each sample's .json)")  # fmt: skip
    dtype = side.cols.dtype
    rel = side.relevant if side.col_valid is None else side.relevant & side.col_valid.unsqueeze(0)
    count = rel.sum(dim=1, keepdim=True)
    log_count = -count.clamp_min(1).to(dtype).log()
    p = side.oracle_precision
    if p == 1.0:
        log_q = torch.where(rel, log_count, NEG_INF)
    else:
        log_q = _oracle_with_precision(side, rel, count, log_count, p)
    empty = (count.squeeze(1) == 0).nonzero().squeeze(1)
    log_q[empty, empty + side.offset] = 0.0  # matches nothing: Y = I on that row
    return log_q


def _oracle_with_precision(
    side: SideView, rel: torch.Tensor, count: torch.Tensor, neg_log_t: torch.Tensor, p: float | str
) -> torch.Tensor:
    """log Q [N_l, N_g] of :func:`oracle_target` at precision p < 1 (rows matching nothing not yet one-hot)."""
    dtype, (n_local, n_global) = side.cols.dtype, rel.shape
    rows = torch.arange(n_local, device=rel.device)
    diag = torch.zeros_like(rel)
    diag[rows, rows + side.offset] = True
    valid = rel.new_ones(n_global).unsqueeze(0) if side.col_valid is None else side.col_valid.unsqueeze(0)
    true_off, false_off = rel & ~diag, valid & ~rel & ~diag
    n_true = true_off.sum(dim=1, keepdim=True).to(dtype)
    n_false = false_off.sum(dim=1, keepdim=True).to(dtype)
    if p == "share":
        p_row = n_true / (n_true + n_false).clamp_min(1)
    else:
        p_row = torch.full_like(n_true, float(p))
    p_row = torch.where(n_false == 0, torch.ones_like(p_row), p_row)  # nowhere else to go: all on T'
    log_true = p_row.log() + neg_log_t
    log_false = torch.log1p(-p_row) + n_true.log() + neg_log_t - n_false.clamp_min(1).log()
    log_q = torch.where(true_off, log_true, torch.where(false_off, log_false, NEG_INF))
    return torch.where(rel & diag, neg_log_t.expand_as(log_q), log_q)


def compose_target(
    log_q: torch.Tensor | None, beta: float, row_valid: torch.Tensor | None, offset: int
) -> torch.Tensor | None:
    """log Y for Y = (1 − β) I + β Q, with invalid rows one-hot: log(β) + log Q off the diagonal,
    logaddexp(log(1 − β), log β + log Q_ii) on it.

    Args:
        log_q: [N_l, N_g] smoothing log-probabilities, or None for Y = I.
        beta: β in [0, 1].
        row_valid: [N_l] bool or None (all valid).
        offset: global column of local row 0's diagonal.

    Returns:
        [N_l, N_g] log target rows (logsumexp 0 per row; −inf for exact zeros), or None meaning the identity.
    """
    if log_q is None or beta == 0:
        return None
    log_beta = math.log(beta)
    log_y = log_q.add_(log_beta) if log_q.is_contiguous() else log_q + log_beta  # fresh blocks or views
    diag = log_y.diagonal(offset)
    if beta < 1:
        torch.logaddexp(diag, diag.new_full((), math.log1p(-beta)), out=diag)
    if row_valid is not None:
        bad = (~row_valid).nonzero().squeeze(1)
        log_y.index_fill_(0, bad, NEG_INF)
        log_y[bad, bad + offset] = 0.0
    return log_y


def identity_log_target(like: torch.Tensor, offset: int) -> torch.Tensor:
    """log I: [N_l, N_g] −inf with zeros at (i, offset + i), ``like``'s dtype and device."""
    log_eye = torch.full(like.shape, NEG_INF, dtype=like.dtype, device=like.device)
    log_eye.diagonal(offset).fill_(0.0)
    return log_eye


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
    """Both directions use the average of A's and B's distributions (one side alone where only it is valid):
    log Q = logaddexp(log w_a + log Q_a, log w_b + log Q_b) with row weights w summing to 1."""
    (lq_a, valid_a), (lq_b, valid_b) = side_a, side_b
    if lq_a is None or lq_b is None:
        # one side without smoothing (never happens with a single target function): use the other one
        only = side_a if lq_b is None else side_b
        return only, only
    ones = lq_a.new_ones(lq_a.shape[0], dtype=torch.bool)
    w_a = (ones if valid_a is None else valid_a).to(lq_a.dtype)
    w_b = (ones if valid_b is None else valid_b).to(lq_b.dtype)
    total = w_a + w_b
    share = total.clamp_min(1.0)
    # log(0) = −inf drops an invalid side; logaddexp(−inf, −inf) = −inf keeps rows valid on neither side finite
    lq = torch.logaddexp(lq_a + (w_a / share).log().unsqueeze(1), lq_b + (w_b / share).log().unsqueeze(1))
    valid = None if valid_a is None and valid_b is None else total > 0
    return (lq, valid), (lq.clone(), valid)


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
    """Log targets of both directions.

    Args:
        side_a: image side (rows: local images; columns: global images).
        side_b: text side.
        target: a :data:`TARGETS` name.
        pairing: a :data:`PAIRINGS` name.
        beta: β. tau: τ, the self-similarity temperature.
        offset: global column of local row 0's diagonal.
        out: optional two [N_l, N_g] scratch blocks the targets of A and B may be built in.

    Returns:
        (log Y_i2t, log Y_t2i), each [N_l, N_g] with rows of log-probabilities, or None for the identity.
    """
    if beta == 0:
        return None, None
    fn = TARGETS.get(target)
    side_a, side_b = replace(side_a, offset=offset), replace(side_b, offset=offset)
    out_a, out_b = (None, None) if out is None else out
    with torch.no_grad():
        lq_a, lq_b = fn(side_a, tau, out=out_a), fn(side_b, tau, out=out_b)
        (lq_i2t, v_i2t), (lq_t2i, v_t2i) = PAIRINGS.get(pairing)(
            (lq_a, side_a.row_valid), (lq_b, side_b.row_valid)
        )
        return compose_target(lq_i2t, beta, v_i2t, offset), compose_target(lq_t2i, beta, v_t2i, offset)
