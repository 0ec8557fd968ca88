"""Instance retrieval (revisitop mAP / mP@k per protocol, junk handling) and copy detection mAP, both with the
evaluation packages' trapezoid AP so numbers compare with published ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from softclip.evaluation.metrics.ids import _as_ids

PROTOCOLS = ("easy", "medium", "hard")


def trapezoid_ap(pos: np.ndarray, n_relevant: int) -> float:
    """AP as the Holidays / revisitop / Copydays packages compute it (trapezoids under the PR curve).

    For the j-th retrieved positive (0-based j) at 0-based position ``p``, the trapezoid between
    precision j/p (1 when p = 0) and (j+1)/(p+1), of width 1/n_relevant, is added.

    Args:
        pos: sorted 0-based positions of the retrieved positives (after junk removal).
        n_relevant: number of positives (> 0).

    Returns:
        AP as a fraction in [0, 1].
    """
    p = np.asarray(pos, dtype=np.float64)
    if n_relevant <= 0:
        raise ValueError("n_relevant must be positive")
    j = np.arange(p.size, dtype=np.float64)
    prec0 = np.where(p == 0, 1.0, j / np.maximum(p, 1.0))
    prec1 = (j + 1.0) / (p + 1.0)
    return float(np.sum(prec0 + prec1) / (2.0 * n_relevant))


def junk_adjusted_positions(ranking: np.ndarray, ok: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based positions of the positives in ``ranking`` once the junk items are removed from it.

    Args:
        ranking: int [n] database ids, best first (may be a truncated list).
        ok: positive ids; junk: ids that neither count nor take a position.

    Returns:
        int64 sorted positions.
    """
    is_junk = np.isin(ranking, junk).astype(np.int64)
    pos = np.flatnonzero(np.isin(ranking, ok))
    # junk strictly before each positive (revisitop's loop; an id in both lists shifts later positives only)
    return pos - (np.cumsum(is_junk)[pos] - is_junk[pos]) if pos.size else pos


def protocol_gnd(gnd: Sequence[Mapping[str, Sequence[int]]], protocol: str) -> list[dict[str, np.ndarray]]:
    """revisitop's positives and junk per protocol.

    easy: ok = easy, junk = junk + hard; medium: ok = easy + hard, junk = junk; hard: ok = hard,
    junk = junk + easy.
    """
    parts = {"easy": (("easy",), ("junk", "hard")), "medium": (("easy", "hard"), ("junk",)),
             "hard": (("hard",), ("junk", "easy"))}
    if protocol not in parts:
        raise ValueError(f"protocol={protocol!r} is not one of: {', '.join(PROTOCOLS)}")
    ok_keys, junk_keys = parts[protocol]

    def cat(g: Mapping[str, Sequence[int]], keys: tuple[str, ...]) -> np.ndarray:
        return np.concatenate([np.asarray(g.get(k, []), dtype=np.int64).ravel() for k in keys])

    return [{"ok": cat(g, ok_keys), "junk": cat(g, junk_keys)} for g in gnd]


def revisitop_map(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, Sequence[int]]],
    protocol: str,
    kappas: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """mAP and mP@k under the revisited Oxford/Paris protocols (Radenović et al., CVPR 2018).

    For each query, positives and junk follow :func:`protocol_gnd`; junk items are removed from the ranking
    (:func:`junk_adjusted_positions`), AP is :func:`trapezoid_ap` over the positives, and P@k is revisitop's:
    with 1-based adjusted ranks r and k' = min(max(r), k), P@k = #(r <= k') / k'. Queries without positives
    under the protocol are left out of both means. A query none of whose positives was retrieved (truncated
    ``ranks``) scores 0.

    Args:
        ranks: int [n_db, n_q] database ids per query column, best first (full or truncated rankings).
        gnd: per query a mapping with ``easy``, ``hard``, ``junk`` id lists (``bbx`` is ignored here).
        protocol: ``easy``, ``medium`` or ``hard``.
        kappas: the k of mP@k.

    Returns:
        ``map`` and ``mp{k}`` for each k, in percent (0 when no query has positives).
    """
    ranks = _as_ids(ranks, 2, "ranks")
    if ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks has {ranks.shape[1]} query columns for {len(gnd)} gnd entries")
    aps, prs = [], []
    for q, g in enumerate(protocol_gnd(gnd, protocol)):
        if g["ok"].size == 0:
            continue
        pos = junk_adjusted_positions(ranks[:, q], g["ok"], g["junk"])
        aps.append(trapezoid_ap(pos, len(g["ok"])))
        r = pos + 1
        row = []
        for k in kappas:
            kq = min(int(r.max()), k) if r.size else k
            row.append(float((r <= kq).sum()) / kq)
        prs.append(row)
    if not aps:
        return {"map": 0.0, **{f"mp{k}": 0.0 for k in kappas}}
    mean_pr = np.mean(np.asarray(prs), axis=0)
    return {"map": 100.0 * float(np.mean(aps)), **{f"mp{k}": 100.0 * float(v) for k, v in zip(kappas, mean_pr, strict=True)}}


def copy_detection_map(topk: np.ndarray, positives: Sequence[Sequence[int]]) -> float:
    """Copy-detection mAP (the Copydays / DINO evaluation): trapezoid AP of each query's originals.

    Args:
        topk: int [n_q, K] database ids per query, best first (originals and distractors).
        positives: per query the database ids of its original(s).

    Returns:
        mAP in percent over the queries that have at least one positive.
    """
    topk = _as_ids(topk, 2, "topk")
    if topk.shape[0] != len(positives):
        raise ValueError(f"topk has {topk.shape[0]} rows for {len(positives)} queries")
    aps = [
        trapezoid_ap(np.flatnonzero(np.isin(topk[q], np.asarray(p, dtype=np.int64))), len(p))
        for q, p in enumerate(positives)
        if len(p)
    ]
    return 100.0 * float(np.mean(aps)) if aps else 0.0
