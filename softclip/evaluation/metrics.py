"""Pure metric math: ranks (or top-k id lists) in, numbers out. No I/O, no models, no search.

Conventions used by every function here:

- All returned metric values are percentages in [0, 100] (ranks stay ranks).
- A *top-k list* is an int array [n_query, K] of gallery ids, best first, as the search wrapper returns it;
  ties in score are broken by the lower gallery id first (``softclip.evaluation.search``). ``-1`` pads a list
  shorter than K and never matches anything.
- A *rank* is 1-based (the best item has rank 1) unless a name says ``pos`` (0-based positions, revisitop's
  convention).
- Two average-precision definitions exist on purpose and each has one implementation:
  :func:`trapezoid_ap` (the Holidays / revisitop / Copydays evaluation packages' AP, used for instance retrieval
  and copy detection so numbers compare with published ones) and :func:`average_precision` (the usual
  non-interpolated AP, mean over relevant items of the precision at their rank, used for semantic retrieval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PROTOCOLS = ("easy", "medium", "hard")


def _as_ids(a: np.ndarray | Sequence, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


# ------------------------------------------------------------------------------------------ zero-shot


def prompt_ensemble(template_embeddings: np.ndarray) -> np.ndarray:
    """Zero-shot classifier weights from prompt templates (CLIP's prompt ensemble).

    Each template embedding is L2-normalised, the templates of a class are averaged, and the mean is
    L2-normalised again.

    Args:
        template_embeddings: float [C, T, d], one embedding per (class, template).

    Returns:
        float32 [C, d] unit-norm class embeddings.
    """
    x = np.asarray(template_embeddings, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"template_embeddings must be [C, T, d], got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    mean = x.mean(axis=1)
    return (mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def topk_accuracy(topk: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy: the share of samples whose true label is among their first k predictions.

    Args:
        topk: int [n, K] predicted class ids, best first (K >= max(ks)).
        labels: int [n] true class ids.
        ks: the k values.

    Returns:
        ``{"top1": ..., "top5": ...}`` in percent.
    """
    topk, labels = _as_ids(topk, 2, "topk"), _as_ids(labels, 1, "labels")
    if topk.shape[0] != labels.shape[0]:
        raise ValueError(f"topk has {topk.shape[0]} rows for {labels.shape[0]} labels")
    if max(ks) > topk.shape[1]:
        raise ValueError(f"k={max(ks)} exceeds the {topk.shape[1]} predictions per sample")
    hit = topk == labels[:, None]
    return {f"top{k}": 100.0 * float(hit[:, :k].any(axis=1).mean()) if len(labels) else 0.0 for k in ks}


def mean_per_class_recall(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of top-1 recall (the share of a class's samples predicted as that class).

    Only classes present in ``labels`` are averaged (a class without samples has no recall).

    Args:
        pred: int [n] top-1 predictions.
        labels: int [n] true class ids.

    Returns:
        The mean per-class recall in percent (0 when there are no samples).
    """
    pred, labels = _as_ids(pred, 1, "pred"), _as_ids(labels, 1, "labels")
    if len(labels) == 0:
        return 0.0
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    correct = np.bincount(inverse, weights=(pred == labels).astype(np.float64), minlength=len(classes))
    return 100.0 * float(np.mean(correct / counts))


def attribute_accuracy(
    pred: np.ndarray, labels: np.ndarray, class_attributes: Sequence[Mapping[str, str]]
) -> dict[str, float]:
    """Per-attribute top-1 accuracy of a joint-class classifier.

    The predicted joint class (e.g. "red circle") is read as its attributes; an attribute is right when the
    predicted class's value equals the true class's value (a "red square" for a "red circle" gets colour
    right and shape wrong).

    Args:
        pred: int [n] top-1 predicted class ids.
        labels: int [n] true class ids.
        class_attributes: per class id, a mapping attribute name -> value (e.g. ``{"shape": "circle"}``).

    Returns:
        ``{"<attribute>_acc": percent}`` for every attribute named by all classes.
    """
    pred, labels = _as_ids(pred, 1, "pred"), _as_ids(labels, 1, "labels")
    names = sorted(set.intersection(*(set(a) for a in class_attributes))) if class_attributes else []
    out: dict[str, float] = {}
    for name in names:
        values = {v: i for i, v in enumerate(sorted({str(a[name]) for a in class_attributes}))}
        code = np.array([values[str(a[name])] for a in class_attributes], dtype=np.int64)
        ok = code[pred] == code[labels] if len(labels) else np.zeros(0, bool)
        out[f"{name}_acc"] = 100.0 * float(ok.mean()) if len(labels) else 0.0
    return out


# ------------------------------------------------------------------------------------------ retrieval


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


# -------------------------------------------------------------------------- instance and copy detection


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


# ------------------------------------------------------------------------------------------ losses


def _row_logsumexp(a: np.ndarray, b: np.ndarray, scale: float, chunk: int) -> np.ndarray:
    out = np.empty(a.shape[0], dtype=np.float64)
    for lo in range(0, a.shape[0], chunk):
        z = scale * (a[lo : lo + chunk] @ b.T)
        m = z.max(axis=1, keepdims=True)
        out[lo : lo + chunk] = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return out


def info_nce(image: np.ndarray, text: np.ndarray, scale: float, chunk: int = 1024) -> float:
    """Symmetric InfoNCE of paired embeddings: ½[CE(Z, I) + CE(Zᵀ, I)] with Z = scale · U Vᵀ.

    The same value as open_clip's ``ClipLoss`` on one batch holding all pairs (computed in float64, in row
    chunks so memory stays O(chunk · n)).

    Args:
        image: float [n, d] image embeddings U (L2-normalised); text: float [n, d] paired text embeddings V.
        scale: the logit multiplier s (already exponentiated).

    Returns:
        The loss (nats).
    """
    u, v = np.asarray(image, dtype=np.float64), np.asarray(text, dtype=np.float64)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"image and text must both be [n, d], got {u.shape} and {v.shape}")
    if u.shape[0] == 0:
        return 0.0
    diag = scale * np.einsum("nd,nd->n", u, v)
    i2t = _row_logsumexp(u, v, scale, chunk) - diag
    t2i = _row_logsumexp(v, u, scale, chunk) - diag
    return float(0.5 * (i2t.mean() + t2i.mean()))
