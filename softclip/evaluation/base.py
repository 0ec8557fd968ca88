"""The evaluator contract and registry.

An evaluator is registered under its suite name (``zeroshot``, ``retrieval``, ``instance``, ``copydays``) as an
:class:`Evaluator`: how to read its dataset (an ``EVAL_READERS`` reader), the schema of its protocol options,
and ``evaluate(model, dataset, cfg) -> dict[str, float]`` with flat snake_case metric keys (``top1``,
``i2t_r1``, ``map_medium``, ...). Models are duck-typed on ``encode_image(images, normalize=True)`` and
``encode_text(tokens, normalize=True)``. The harness adds the benchmark name and writes the result files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from softclip.evaluation.embed import Embedder, valid_rows
from softclip.evaluation.search import SearchConfig
from softclip.registry import Registry


class Options(BaseModel):
    """Base of every evaluator's protocol options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class EvalContext:
    """The ``cfg`` an evaluator receives: its validated options plus the shared machinery.

    Attributes:
        options: the evaluator's :class:`Options` subclass instance.
        embedder: image/text embedding with cache (owns preprocess, tokenizer, device, batch size).
        search: FAISS search knobs.
        info: filled by the evaluator with protocol facts worth recording (counts, dropped items, index kind).
    """

    options: Any
    embedder: Embedder
    search: SearchConfig = field(default_factory=SearchConfig)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluator:
    """One benchmark kind.

    Attributes:
        task: what it measures, recorded in result files.
        options: pydantic schema of the protocol options (``extra=forbid``).
        load: ``(path, options) -> dataset`` (through ``EVAL_READERS``).
        evaluate: ``(model, dataset, cfg: EvalContext) -> dict[str, float]``.
        n_items: ``dataset -> int`` (queries or test images), recorded in result files.
    """

    task: str
    options: type[Options]
    load: Callable[[Path, Any], Any]
    evaluate: Callable[[Any, Any, EvalContext], dict[str, float]]
    n_items: Callable[[Any], int]


EVALUATORS: Registry[Evaluator] = Registry("eval benchmark")


def list_evaluators() -> list[str]:
    """Registered evaluator names (the implementations register when ``softclip.evaluation`` is imported, which
    importing this module already did)."""
    return EVALUATORS.names()


def keep_valid(emb: np.ndarray, info: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``emb`` that hold embeddings and their original indices; records dropped counts in ``info``.

    Returns:
        (float32 [m, d] valid rows, int64 [m] their indices in ``emb``).
    """
    ok = valid_rows(emb)
    idx = np.flatnonzero(ok)
    if (~ok).any():
        info[f"n_bad_{name}"] = int((~ok).sum())
    return emb[idx], idx


def remap(ids: np.ndarray, kept: np.ndarray, size: int) -> np.ndarray:
    """Map old ids to positions in ``kept`` (dropped ids become -1). ``size`` is the old id range."""
    table = np.full(size, -1, dtype=np.int64)
    table[kept] = np.arange(len(kept))
    arr = np.asarray(ids, dtype=np.int64)
    return table[arr] if arr.size else arr
