"""Zero-shot classification on an ImageFolder set with a prompt-ensemble classifier.

Protocol: every (class, template) prompt is embedded; a class's weight is the renormalised mean of its
normalised prompt embeddings (:func:`~softclip.evaluation.metrics.prompt_ensemble`); images are classified by
the highest inner product (ties to the lower class id). Metrics: ``top1``, ``top5``, ``mean_per_class_recall``
and, where the set ships ``attributes.json``, per-attribute accuracy of the joint prediction (``shape_acc``,
``colour_acc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from softclip.data.badsamples import DataError
from softclip.data.readers import EVAL_READERS, ImageFolderData
from softclip.evaluation import metrics
from softclip.evaluation.base import EVALUATORS, EvalContext, Evaluator, Options, keep_valid
from softclip.evaluation.search import GalleryIndex
from softclip.evaluation.templates import CLASSNAME_SETS, TEMPLATE_SETS, load_templates


class ZeroShotOptions(Options):
    """Protocol options of the ``zeroshot`` evaluator."""

    split: str = Field("test", description="split folder under the dataset root")
    templates: str = Field(
        "auto", description="auto (the set's templates.txt, else imagenet80), dataset, a template set name "
        "(imagenet80, imagenet7, single) or a file relative to the dataset root",
    )
    classnames: str | None = Field(
        None, description="class names overriding the set's: a named list (imagenet1k: CLIP's 1,000 ImageNet "
        "names) or a file relative to the dataset root",
    )
    ks: tuple[int, ...] = Field((1, 5), min_length=1, description="top-k accuracies")
    attributes: bool = Field(True, description="per-attribute accuracy where attributes.json exists")
    max_per_class: int | None = Field(None, ge=1, description="evaluate only the first N images (sorted) of "
                                      "each class (a light periodic check)")


def _resolve(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def load(path: Path, opts: ZeroShotOptions) -> ImageFolderData:
    """Read the ImageFolder split (and the class-name override)."""
    data = EVAL_READERS.get("imagefolder")(path, split=opts.split)
    if opts.max_per_class is not None:
        rank = np.zeros(len(data.labels), dtype=np.int64)  # position of each image within its class
        for c in np.unique(data.labels):
            where = np.flatnonzero(data.labels == c)
            rank[where] = np.arange(len(where))
        keep = np.flatnonzero(rank < opts.max_per_class)
        data.paths, data.labels = [data.paths[i] for i in keep], data.labels[keep]
    if opts.classnames:
        if opts.classnames in CLASSNAME_SETS.names():
            f, names = opts.classnames, list(CLASSNAME_SETS.get(opts.classnames)())
        else:
            f = _resolve(Path(path), opts.classnames)
            if not f.is_file():
                raise DataError(f"zero-shot class-name file not found: {f} (named lists: "
                                f"{', '.join(CLASSNAME_SETS.names())})")  # fmt: skip
            names = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(names) != len(data.classnames):
            raise DataError(f"{f}: {len(names)} class names for {len(data.classnames)} class folders")
        data.classnames = names
    return data


def templates_for(data: ImageFolderData, choice: str) -> list[str]:
    """The prompt templates a ``templates`` option selects."""
    if choice == "auto":
        return list(data.templates) if data.templates else list(TEMPLATE_SETS.get("imagenet80"))
    if choice == "dataset":
        if not data.templates:
            raise DataError(f"templates: dataset, but {data.root} has no templates.txt")
        return list(data.templates)
    if choice in TEMPLATE_SETS:
        return list(TEMPLATE_SETS.get(choice))
    f = _resolve(data.root, choice)
    if not f.is_file():
        raise DataError(f"templates={choice!r} is neither {', '.join(TEMPLATE_SETS.names())} nor a file ({f})")
    return load_templates(f)


def class_weights(model: Any, classnames: list[str], templates: list[str], cfg: EvalContext):
    """Prompt-ensemble classifier weights float32 [C, d]."""
    prompts = [t.replace("{}", name) for name in classnames for t in templates]
    emb = cfg.embedder.texts(model, prompts)
    return metrics.prompt_ensemble(emb.reshape(len(classnames), len(templates), -1))


def evaluate(model: Any, data: ImageFolderData, cfg: EvalContext) -> dict[str, float]:
    """Zero-shot top-k, mean per-class recall and per-attribute accuracy (percent)."""
    opts: ZeroShotOptions = cfg.options
    templates = templates_for(data, opts.templates)
    weights = class_weights(model, data.classnames, templates, cfg)
    images, kept = keep_valid(cfg.embedder.images(model, data.paths, source=str(data.root)), cfg.info, "images")
    labels = data.labels[kept]
    n_classes = len(data.classnames)
    ks = tuple(k for k in opts.ks if k <= n_classes)
    _, topk = GalleryIndex(weights, cfg.search).search(images, max(ks))
    out = metrics.topk_accuracy(topk, labels, ks)
    out["mean_per_class_recall"] = metrics.mean_per_class_recall(topk[:, 0], labels)
    cfg.info.update(n_classes=n_classes, n_templates=len(templates))
    if opts.attributes and data.attributes:
        missing = [c for c in data.classnames if c not in data.attributes]
        if missing:
            cfg.info["attributes_skipped"] = f"no attributes for {len(missing)} classes, e.g. {missing[0]!r}"
        else:
            attrs = [data.attributes[c] for c in data.classnames]
            out.update(metrics.attribute_accuracy(topk[:, 0], labels, attrs))
    return out


EVALUATORS.register("zeroshot")(
    Evaluator(
        task="zero-shot classification", options=ZeroShotOptions, load=load, evaluate=evaluate,
        n_items=lambda data: len(data.paths),
    )
)
