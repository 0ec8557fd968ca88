"""Copy detection on Copydays (strong, jpegqual, crops) against originals plus distractors.

Protocol (as DINO's evaluation): the database is the originals followed by the distractors; optionally the
features are PCA-whitened with a transform learned on the separate whitening set and L2-normalised again;
every query retrieves its top ``topk`` database items by inner product (ties to the lower id) and scores the
Holidays trapezoid AP of its original (:func:`~softclip.evaluation.metrics.copy_detection_map`).

Keys: ``map_strong``, ``map_{block}`` for every other block present (all its queries) and
``map_{block}_{level}`` per sub-folder (JPEG quality, crop percent), in percent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from softclip.data import layout
from softclip.data.readers import EVAL_READERS, CopydaysData
from softclip.evaluation import metrics
from softclip.evaluation.base import EVALUATORS, EvalContext, Evaluator, Options, keep_valid, remap
from softclip.evaluation.search import GalleryIndex


class CopydaysOptions(Options):
    """Protocol options of the ``copydays`` evaluator."""

    blocks: tuple[str, ...] = Field(layout.COPYDAYS_BLOCKS, min_length=1,
                                    description="query blocks; strong is required, others used when present")
    distractors: bool | str = Field(True, description="true: distractors/ under the root; a folder; false: none")
    whitening: bool | str = Field(True, description="true: whitening/ when present; a folder; false: no whitening")
    whitening_power: float = Field(0.5, ge=0.0, le=1.0, description="eigenvalue power (0.5 = full whitening)")
    whitening_dim: int | None = Field(None, ge=1, description="kept components; default min(d, n_whitening-1)")
    topk: int = Field(20, ge=1, description="ranking depth (DINO: 20)")


def load(path: Path, opts: CopydaysOptions) -> CopydaysData:
    """Read the blocks present (``strong`` must be), distractors and whitening images."""
    root = Path(path)
    blocks = tuple(b for b in opts.blocks if b == "strong" or (root / b).is_dir())

    def folder(value: bool | str) -> bool | Path:
        return value if isinstance(value, bool) else root / Path(value).expanduser()  # absolute stays absolute

    return EVAL_READERS.get("copydays")(
        root, blocks=blocks, distractors=folder(opts.distractors), whitening=folder(opts.whitening)
    )


def learn_whitening(x: np.ndarray, power: float = 0.5, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening from samples: y = diag(λ^-power) Vᵀ (x - μ) over the top ``dim`` eigenvectors.

    Eigenvalues are floored at 1e-5 of the largest (as DINO does) and ``dim`` defaults to min(d, n - 1), the
    rank of the centred sample covariance, so null directions are not blown up.

    Args:
        x: float [n, d] samples (n >= 2).

    Returns:
        (mean float64 [d], projection float64 [dim, d]).
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("PCA-whitening needs at least 2 samples")
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean) / n
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, vals.max() * 1e-5)
    order = np.argsort(vals)[::-1][: min(dim or d, d, n - 1)]
    return mean, (vecs[:, order] / vals[order] ** power).T


def apply_whitening(x: np.ndarray, mean: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """Whiten and L2-normalise: float32 [n, dim]."""
    y = (np.asarray(x, dtype=np.float64) - mean) @ proj.T
    return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _block_maps(name: str, topk: np.ndarray, gt: np.ndarray, levels: list[str]) -> dict[str, float]:
    out = {f"map_{name}": metrics.copy_detection_map(topk, [[g] for g in gt])}
    for level in sorted({lv for lv in levels if lv}, key=lambda s: (len(s), s)):
        rows = [i for i, lv in enumerate(levels) if lv == level]
        key = f"map_{name}_{re.sub(r'[^a-z0-9]+', '_', level.lower()).strip('_')}"
        out[key] = metrics.copy_detection_map(topk[rows], [[g] for g in gt[rows]])
    return out


def evaluate(model: Any, data: CopydaysData, cfg: EvalContext) -> dict[str, float]:
    """Copy-detection mAP per block and sub-level."""
    opts: CopydaysOptions = cfg.options
    emb = cfg.embedder
    db, kept_db = keep_valid(emb.images(model, data.database, source=str(data.root)), cfg.info, "database")
    whiten = None
    if opts.whitening is not False and data.whitening:
        white, _ = keep_valid(emb.images(model, data.whitening, source=str(data.root)), cfg.info, "whitening")
        if len(white) >= 2:
            whiten = learn_whitening(white, opts.whitening_power, opts.whitening_dim)
            db = apply_whitening(db, *whiten)
    index = GalleryIndex(db, cfg.search)
    out: dict[str, float] = {}
    for name, block in data.blocks.items():
        q, kept_q = keep_valid(emb.images(model, block.paths, source=str(data.root)), cfg.info, name)
        gt = remap(block.gt[kept_q], kept_db, len(data.database))
        rows = np.flatnonzero(gt >= 0)
        q = apply_whitening(q[rows], *whiten) if whiten is not None else q[rows]
        _, ids = index.search(q, min(opts.topk, len(db)))
        out.update(_block_maps(name, ids, gt[rows], [block.levels[i] for i in kept_q[rows]]))
        cfg.info[f"n_queries_{name}"] = int(len(rows))
    cfg.info.update(n_database=int(len(db)), n_originals=int(data.num_originals),
                    whitening_dim=int(whiten[1].shape[0]) if whiten is not None else None)  # fmt: skip
    return out


EVALUATORS.register("copydays")(
    Evaluator(
        task="copy detection", options=CopydaysOptions, load=load, evaluate=evaluate,
        n_items=lambda data: sum(len(b.paths) for b in data.blocks.values()),
    )
)
