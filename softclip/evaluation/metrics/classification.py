"""Zero-shot classification metrics: prompt ensembles, top-k accuracy, per-class and per-attribute recall."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from softclip.evaluation.metrics.ids import _as_ids


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
