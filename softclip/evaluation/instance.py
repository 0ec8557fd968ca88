"""Instance retrieval on a revisitop set (rOxford5k, rParis6k, SynthScenes' ``synthoxford``).

Protocol: database images and query images are embedded (queries cropped to their ``bbx`` when
``query_crop`` is on, as in revisitop's own evaluation; off, as in DINO's); each query ranks the database by
inner product (ties to the lower id) and :func:`~softclip.evaluation.metrics.revisitop_map` scores the ranking
under the Easy, Medium and Hard protocols. Keys: ``map_easy``, ``mp1_easy``, ``mp5_easy``, ``mp10_easy``,
``map_medium``, ... (percent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from softclip.data import layout
from softclip.data.readers import EVAL_READERS, RevisitopData
from softclip.evaluation import metrics
from softclip.evaluation.base import EVALUATORS, EvalContext, Evaluator, Options, keep_valid, remap
from softclip.evaluation.search import GalleryIndex


class InstanceOptions(Options):
    """Protocol options of the ``instance`` evaluator."""

    name: str = Field(layout.INSTANCE_NAME, description="revisitop set name: gnd_{name}.pkl")
    query_crop: bool = Field(True, description="crop queries to bbx (revisitop) or not (DINO)")
    protocols: tuple[Literal["easy", "medium", "hard"], ...] = Field(("easy", "medium", "hard"), min_length=1)
    kappas: tuple[int, ...] = Field((1, 5, 10), min_length=1, description="k of mP@k")
    topk: int | None = Field(None, ge=1, description="ranking depth; None ranks the whole database")


def load(path: Path, opts: InstanceOptions) -> RevisitopData:
    """Read ``gnd_{name}.pkl`` and the image lists."""
    return EVAL_READERS.get("revisitop")(path, opts.name)


def _remap_gnd(gnd: list[dict[str, np.ndarray]], kept_db: np.ndarray, n_db: int) -> list[dict[str, np.ndarray]]:
    out = []
    for g in gnd:
        new = {"bbx": g.get("bbx", np.zeros(0))}
        for key in ("easy", "hard", "junk"):
            ids = remap(g.get(key, np.zeros(0, np.int64)), kept_db, n_db)
            new[key] = ids[ids >= 0]
        out.append(new)
    return out


def evaluate(model: Any, data: RevisitopData, cfg: EvalContext) -> dict[str, float]:
    """revisitop mAP and mP@k per protocol."""
    opts: InstanceOptions = cfg.options
    boxes = [g.get("bbx") for g in data.gnd] if opts.query_crop else None
    db, kept_db = keep_valid(cfg.embedder.images(model, data.images, source=str(data.root)), cfg.info, "database")
    q, kept_q = keep_valid(cfg.embedder.images(model, data.queries, source=str(data.root), boxes=boxes),
                           cfg.info, "queries")  # fmt: skip
    gnd = _remap_gnd([data.gnd[i] for i in kept_q], kept_db, len(data.images))
    k = min(len(db), opts.topk or len(db))
    _, ids = GalleryIndex(db, cfg.search).search(q, k)
    ranks = ids.T  # [k, n_q], revisitop's layout
    out: dict[str, float] = {}
    for protocol in opts.protocols:
        for key, value in metrics.revisitop_map(ranks, gnd, protocol, opts.kappas).items():
            out[f"{key}_{protocol}"] = value
    cfg.info.update(n_database=int(len(db)), n_queries=int(len(q)), query_crop=opts.query_crop, depth=int(k))
    return out


EVALUATORS.register("instance")(
    Evaluator(
        task="instance retrieval", options=InstanceOptions, load=load, evaluate=evaluate,
        n_items=lambda data: len(data.queries),
    )
)
