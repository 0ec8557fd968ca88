"""Collation of decoded training samples into the batch dict the trainer consumes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from softclip.data.readers.base import Sample

Tokenizer = Callable[[list[str]], torch.Tensor]
TAG_SEPARATOR = ", "


def tag_text(tags: Sequence[str], kmax: int) -> str:
    """The tag prompt of one image: its first ``kmax`` region tags joined by ``", "`` ("" when none)."""
    return TAG_SEPARATOR.join(tags[:kmax])


class CachedTokenizer:
    """Memoises a tokenizer per string (tag prompts repeat across images); at most ``max_entries`` kept.

    Args:
        tokenizer: ``list[str] -> long [B, L]``.
        max_entries: cache size bound; beyond it new strings are tokenized but not stored.
    """

    def __init__(self, tokenizer: Tokenizer, max_entries: int = 50_000) -> None:
        self.tokenizer, self.max_entries = tokenizer, max_entries
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        fresh = dict(zip(missing, self.tokenizer(missing), strict=True)) if missing else {}
        rows = [self.cache.get(t, fresh.get(t)) for t in texts]
        for t, row in fresh.items():
            if len(self.cache) < self.max_entries:
                self.cache[t] = row.clone()
        return torch.stack(rows)


def collate(
    samples: Sequence[Sample], tokenizer: Tokenizer, kmax: int, tag_tokenizer: Tokenizer | None = None
) -> dict:
    """Stack samples into a batch.

    Regions beyond ``kmax`` are dropped from the end (detectors sort regions by confidence), tags with them.

    Args:
        samples: B >= 1 decoded samples, all with the same image shape and region width D.
        tokenizer: open_clip's tokenizer, ``list[str] -> LongTensor [B, L]``.
        kmax: number of region slots.
        tag_tokenizer: tokenizer for the tag prompts (e.g. a CachedTokenizer); ``tokenizer`` by default.

    Returns:
        ``{"image": float [B,3,H,W], "text": long [B,L], "roi": float16 or float32 [B,kmax,D] (zero padded;
        float32 if any sample's is), "roi_mask": bool [B,kmax] (True = valid region), "tags": long [B,L]
        (tokens of the joined tags), "tags_mask": bool [B] (has >= 1 tag), "key": list[str]}``, and, when every
        sample carries scene annotations, ``"scene_image": long [B, T+1], "scene_text": long [B, 2M+1]``
        (:mod:`softclip.objective.oracle`).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    dims = {s.roi.shape[1] for s in samples}
    if len(dims) != 1:
        raise ValueError(f"samples disagree on the region width D: {sorted(dims)}")
    b, d = len(samples), dims.pop()
    dtype = functools.reduce(torch.promote_types, {s.roi.dtype for s in samples})  # float16 sidecars stay float16
    roi = torch.zeros(b, kmax, d, dtype=dtype)
    roi_mask = torch.zeros(b, kmax, dtype=torch.bool)
    for i, s in enumerate(samples):
        k = min(s.roi.shape[0], kmax)
        roi[i, :k] = s.roi[:k]
        roi_mask[i, :k] = True
    tag_texts = [tag_text(s.tags, kmax) for s in samples]
    scenes = {}
    if all(s.scene is not None for s in samples):
        scenes = {"scene_image": torch.stack([s.scene[0] for s in samples]),
                  "scene_text": torch.stack([s.scene[1] for s in samples])}  # fmt: skip
    return {
        "image": torch.stack([s.image for s in samples]),
        "text": tokenizer([s.caption for s in samples]),
        "roi": roi,
        "roi_mask": roi_mask,
        "tags": (tag_tokenizer or tokenizer)(tag_texts),
        "tags_mask": torch.tensor([bool(t) for t in tag_texts], dtype=torch.bool),
        "key": [s.key for s in samples],
        **scenes,
    }
