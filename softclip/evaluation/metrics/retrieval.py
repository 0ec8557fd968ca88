"""Image-text retrieval metrics: recall@k (an image hits when any of its captions is in its top k), ranks, RSUM,
and semantic retrieval against many-to-many ground truth (non-interpolated AP)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from softclip.evaluation.metrics.ids import _as_ids


def _hits_at(topk: np.ndarray, relevant: Sequence[np.ndarray] | np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Share of queries with at least one relevant id among the first k, per k (fractions)."""
    n = topk.shape[0]
    first = np.full(n, np.inf)
    for q in range(n):
        hit = np.flatnonzero(np.isin(topk[q], relevant[q]))
        if hit.size:
            first[q] = hit[0]
    return {k: float((first < k).mean()) if n else 0.0 for k in ks}


def retrieval_recalls(
    i2t_topk: np.ndarray,
    t2i_topk: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image↔text Recall@k as in the Flickr30K / COCO Karpathy-split protocol.

    Image→text: an image hits at k when any of its captions is among its first k retrieved texts.
    Text→image: a text hits at k when its own image is among its first k retrieved images.

    Args:
        i2t_topk: int [n_img, K] text ids per image query, best first.
        t2i_topk: int [n_txt, K] image ids per text query, best first.
        text_to_image: int [n_txt] the image id each caption belongs to.
        ks: the k values (each <= K).

    Returns:
        ``i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10`` (for the given ks), in percent.
    """
    i2t, t2i = _as_ids(i2t_topk, 2, "i2t_topk"), _as_ids(t2i_topk, 2, "t2i_topk")
    t2im = _as_ids(text_to_image, 1, "text_to_image")
    if t2i.shape[0] != t2im.shape[0]:
        raise ValueError(f"t2i_topk has {t2i.shape[0]} rows for {t2im.shape[0]} texts")
    for name, arr in (("i2t_topk", i2t), ("t2i_topk", t2i)):
        if max(ks) > arr.shape[1]:
            raise ValueError(f"k={max(ks)} exceeds the {arr.shape[1]} columns of {name}")
    captions = items_of(t2im, i2t.shape[0])
    out: dict[str, float] = {}
    for k, v in _hits_at(i2t, captions, ks).items():
        out[f"i2t_r{k}"] = 100.0 * v
    hit = t2i == t2im[:, None]
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * float(hit[:, :k].any(axis=1).mean()) if len(t2im) else 0.0
    return {key: out[key] for key in sorted(out, key=lambda s: (s[:3], int(s[5:])))}


def items_of(text_to_image: np.ndarray, n_img: int) -> list[np.ndarray]:
    """Invert an item -> group map: per group id in [0, n_img), the sorted item ids mapped to it."""
    text_to_image = np.asarray(text_to_image, dtype=np.int64)
    order = np.argsort(text_to_image, kind="stable")
    bounds = np.searchsorted(text_to_image[order], np.arange(n_img + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_img)]


def rank_statistics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10), prefix: str = "") -> dict[str, float]:
    """Recall@k, mean and median rank from the full rank of each query's first relevant item.

    Args:
        ranks: int or float [n] 1-based rank of the best-ranked relevant item per query (``inf`` when none).
        ks: the k values.
        prefix: prepended to every key, e.g. ``"i2t_"``.

    Returns:
        ``{prefix}r{k}`` in percent, ``{prefix}mean_rank`` and ``{prefix}median_rank`` (1 is best).
    """
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1 or (r.size and r.min() < 1):
        raise ValueError("ranks must be a 1-D array of 1-based ranks")
    out = {f"{prefix}r{k}": 100.0 * float((r <= k).mean()) if r.size else 0.0 for k in ks}
    out[f"{prefix}mean_rank"] = float(r.mean()) if r.size else 0.0
    out[f"{prefix}median_rank"] = float(np.median(r)) if r.size else 0.0
    return out


def rsum(recalls: Mapping[str, float], ks: Sequence[int] = (1, 5, 10)) -> float:
    """RSUM: the sum of i2t and t2i Recall@k over ``ks`` (in percent points, at most 600 for three ks)."""
    return float(sum(recalls[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks))


def average_precision(ranks: np.ndarray, n_relevant: int) -> float:
    """Non-interpolated AP: mean over relevant items of the precision at their rank.

    Args:
        ranks: 1-based ranks of the retrieved relevant items (any order; missing items simply absent).
        n_relevant: number of relevant items (the denominator; > 0).

    Returns:
        AP as a fraction in [0, 1].
    """
    r = np.sort(np.asarray(ranks, dtype=np.float64))
    if n_relevant <= 0:
        raise ValueError("n_relevant must be positive")
    return float(np.sum(np.arange(1, r.size + 1) / r) / n_relevant)


def semantic_retrieval(
    relevant_ranks: Sequence[np.ndarray], ks: Sequence[int] = (1, 5, 10), prefix: str = ""
) -> dict[str, float]:
    """Retrieval against a semantic relevance ground truth (all items that truly match, not only the pair).

    Args:
        relevant_ranks: per query, the 1-based full-gallery ranks of all its relevant items. Queries with no
            relevant item are left out.
        ks: the k values.
        prefix: prepended to every key, e.g. ``"i2t_sem_"``.

    Returns:
        ``{prefix}r{k}`` (a query hits when any relevant item is in its first k) and ``{prefix}map``
        (mean non-interpolated AP over all relevant items), in percent.
    """
    kept = [np.asarray(r, dtype=np.float64) for r in relevant_ranks if len(r)]
    if not kept:
        return {**{f"{prefix}r{k}": 0.0 for k in ks}, f"{prefix}map": 0.0}
    best = np.array([r.min() for r in kept])
    out = {f"{prefix}r{k}": 100.0 * float((best <= k).mean()) for k in ks}
    out[f"{prefix}map"] = 100.0 * float(np.mean([average_precision(r, len(r)) for r in kept]))
    return out
