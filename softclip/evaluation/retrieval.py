"""Image-text retrieval on a Karpathy-split set (Flickr30K 1k test, COCO 5k test, SynthScenes).

Protocol: every test image and every caption is embedded; image→text and text→image top-k come from the
search wrapper (exact inner product, ties to the lower id). Metrics (percent unless a rank):

- ``i2t_r{k}``, ``t2i_r{k}`` (:func:`~softclip.evaluation.metrics.retrieval_recalls`: an image hits when any
  of its captions is in its top k) and ``rsum``;
- ``i2t_mean_rank``, ``i2t_median_rank``, ``t2i_...`` from the full rank of the first correct item;
- ``i2t_sem_r{k}``, ``i2t_sem_map``, ``t2i_sem_...`` against ``relevance.json`` where the set has one (every
  caption that truly describes an image counts, not only its own five);
- ``val_nce_loss``: the symmetric InfoNCE over the (image, first caption) pairs with the model's logit scale
  (the trainer's validation loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from softclip.data.readers import EVAL_READERS, KarpathyData
from softclip.evaluation import metrics
from softclip.evaluation.base import EVALUATORS, EvalContext, Evaluator, Options, keep_valid, remap
from softclip.evaluation.search import GalleryIndex, ranks_of


class RetrievalOptions(Options):
    """Protocol options of the ``retrieval`` evaluator."""

    karpathy_json: str = Field("dataset.json", description="Karpathy split JSON, relative to the dataset path")
    images: str | None = Field(None, description="image root relative to the dataset path (default images/)")
    split: str = Field("test", description="Karpathy split to evaluate")
    ks: tuple[int, ...] = Field((1, 5, 10), min_length=1, description="Recall@k values")
    rank_stats: bool = Field(True, description="mean/median rank from full rankings")
    semantic: bool = Field(True, description="semantic R@k and mAP where relevance.json exists")
    nce_loss: bool = Field(True, description="val_nce_loss on (image, first caption) pairs")
    max_images: int | None = Field(None, ge=1, description="evaluate only the split's first N images and their "
                                   "captions (a light periodic check; semantic scores are then left out)")


def load(path: Path, opts: RetrievalOptions) -> KarpathyData:
    """Read the split from the Karpathy JSON under ``path``."""
    images = None if opts.images is None else Path(path) / opts.images
    data = EVAL_READERS.get("karpathy")(Path(path) / opts.karpathy_json, images_root=images, split=opts.split)
    return data if opts.max_images is None else first_images(data, opts.max_images)


def first_images(data: KarpathyData, n: int) -> KarpathyData:
    """The split cut to its first ``n`` images and their captions (caption ids renumbered, no relevance)."""
    if n >= len(data.image_paths):
        return data
    keep = np.flatnonzero(data.text_to_image < n)
    new_id = {int(t): j for j, t in enumerate(keep)}
    return KarpathyData(
        data.dataset, data.split, data.image_paths[:n], [data.captions[t] for t in keep],
        data.text_to_image[keep], [[new_id[t] for t in texts] for texts in data.image_to_texts[:n]], None,
    )  # fmt: skip


def logit_scale(model: Any) -> float | None:
    """The logit multiplier s of a model: SoftCLIPModel's ``logit_scale`` (already exponentiated), or exp of an
    ``nn.Parameter`` (open_clip's raw models store log s); None when the model has none."""
    s = getattr(model, "logit_scale", None)
    if s is None:
        return None
    if isinstance(s, torch.nn.Parameter):
        return float(s.detach().float().exp())
    return float(torch.as_tensor(s).detach().float())


def _transpose(rel: list[np.ndarray], n_txt: int) -> list[np.ndarray]:
    rows: list[list[int]] = [[] for _ in range(n_txt)]
    for i, caps in enumerate(rel):
        for t in caps:
            rows[int(t)].append(i)
    return [np.asarray(r, dtype=np.int64) for r in rows]


def _rank_metrics(img: np.ndarray, txt: np.ndarray, t2i: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    captions = metrics.items_of(t2i, len(img))
    i2t_first = np.array([r.min() if r.size else np.inf for r in ranks_of(img, txt, captions)])
    t2i_first = np.array([r[0] for r in ranks_of(txt, img, [np.array([i]) for i in t2i])], dtype=np.float64)
    out: dict[str, float] = {}
    for prefix, ranks in (("i2t_", i2t_first[np.isfinite(i2t_first)]), ("t2i_", t2i_first)):
        stats = metrics.rank_statistics(ranks, ks, prefix=prefix)
        out.update({k: v for k, v in stats.items() if k.endswith("_rank")})
    return out


def _semantic(img: np.ndarray, txt: np.ndarray, rel: list[np.ndarray], ks: tuple[int, ...]) -> dict[str, float]:
    out = metrics.semantic_retrieval(ranks_of(img, txt, rel), ks, prefix="i2t_sem_")
    out.update(metrics.semantic_retrieval(ranks_of(txt, img, _transpose(rel, len(txt))), ks, prefix="t2i_sem_"))
    return out


def evaluate(model: Any, data: KarpathyData, cfg: EvalContext) -> dict[str, float]:
    """Recall@k, RSUM, rank statistics, semantic scores and the validation InfoNCE loss."""
    opts: RetrievalOptions = cfg.options
    n_img0 = len(data.image_paths)
    img, kept_img = keep_valid(cfg.embedder.images(model, data.image_paths, source=str(data.image_paths[0].parent)),
                               cfg.info, "images")  # fmt: skip
    txt_all = cfg.embedder.texts(model, data.captions)
    t2i_all = remap(data.text_to_image, kept_img, n_img0)
    kept_txt = np.flatnonzero(t2i_all >= 0)
    txt, t2i = txt_all[kept_txt], t2i_all[kept_txt]
    k = max(opts.ks)
    _, i2t_ids = GalleryIndex(txt, cfg.search).search(img, k)
    _, t2i_ids = GalleryIndex(img, cfg.search).search(txt, k)
    out = metrics.retrieval_recalls(i2t_ids, t2i_ids, t2i, opts.ks)
    out["rsum"] = metrics.rsum(out, opts.ks)
    if opts.rank_stats:
        out.update(_rank_metrics(img, txt, t2i, opts.ks))
    if opts.semantic and data.relevance is not None:
        rel = [remap(np.asarray(data.relevance[i], np.int64), kept_txt, len(data.captions)) for i in kept_img]
        out.update(_semantic(img, txt, [r[r >= 0] for r in rel], opts.ks))
    scale = logit_scale(model)
    if opts.nce_loss and scale is not None:
        first = [data.image_to_texts[i][0] for i in kept_img if data.image_to_texts[i]]
        has = [j for j, i in enumerate(kept_img) if data.image_to_texts[i]]
        out["val_nce_loss"] = metrics.info_nce(img[has], txt_all[first], scale)
    cfg.info.update(n_images=int(len(img)), n_texts=int(len(txt)), logit_scale=scale,
                    semantic=data.relevance is not None and opts.semantic)  # fmt: skip
    return out


EVALUATORS.register("retrieval")(
    Evaluator(
        task="image-text retrieval", options=RetrievalOptions, load=load, evaluate=evaluate,
        n_items=lambda data: len(data.image_paths),
    )
)
