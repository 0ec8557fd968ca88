"""Input checking shared by the metric modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_ids(a: np.ndarray | Sequence, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)
