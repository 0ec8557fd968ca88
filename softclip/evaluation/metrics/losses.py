"""Losses computed on embeddings at evaluation time (chunked, float64)."""

from __future__ import annotations

import numpy as np


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
