"""collate(): shapes, zero padding, kmax truncation, masks and tokenised tags."""

from __future__ import annotations

import open_clip
import pytest
import torch

from softclip.data.collate import CachedTokenizer, collate, tag_text
from softclip.data.readers.base import Sample
from tests.unit.data.readers_fixtures import HashTokenizer

D = 5


def _sample(k: int, tags: list[str] | None = None, key: str = "k") -> Sample:
    roi = torch.arange(k * D, dtype=torch.float32).reshape(k, D) + 1
    tags = [f"tag{j}" for j in range(k)] if tags is None else tags
    return Sample(torch.rand(3, 4, 4), f"caption of {key}", roi, tags, key, "00000.tar")


class RecordingTokenizer(HashTokenizer):
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        return super().__call__(texts)


def test_shapes_padding_masks_and_truncation():
    samples = [_sample(2, key="a"), _sample(0, key="b"), _sample(5, key="c")]
    tok = RecordingTokenizer()
    batch = collate(samples, tok, kmax=3)
    assert set(batch) == {"image", "text", "roi", "roi_mask", "tags", "tags_mask", "key"}
    assert batch["image"].shape == (3, 3, 4, 4) and batch["image"].dtype == torch.float32
    assert batch["text"].shape == (3, 6) and batch["text"].dtype == torch.long
    assert batch["roi"].shape == (3, 3, D) and batch["roi"].dtype == torch.float32
    assert batch["roi_mask"].tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert torch.equal(batch["roi"][0, :2], samples[0].roi) and not batch["roi"][0, 2].any()
    assert not batch["roi"][1].any()
    assert torch.equal(batch["roi"][2], samples[2].roi[:3])  # the first kmax regions are kept
    assert batch["tags_mask"].tolist() == [True, False, True]
    assert batch["key"] == ["a", "b", "c"]
    assert tok.calls[0] == ["caption of a", "caption of b", "caption of c"]
    assert tok.calls[1] == ["tag0, tag1", "", "tag0, tag1, tag2"]  # tags beyond kmax dropped with their regions
    assert torch.equal(batch["tags"], HashTokenizer()(tok.calls[1]))


def test_float16_regions_stay_float16_and_mixed_batches_widen_exactly():
    half = [_sample(2, key="a"), _sample(3, key="b")]
    for s in half:
        s.roi = s.roi.half()
    batch = collate(half, HashTokenizer(), kmax=3)
    assert batch["roi"].dtype == torch.float16  # half the bytes through shared memory and to the device
    mixed = collate([*half, _sample(1, key="c")], HashTokenizer(), kmax=3)
    assert mixed["roi"].dtype == torch.float32
    assert torch.equal(mixed["roi"][:2], batch["roi"].float())  # float16 -> float32 is exact


def test_tag_text_and_open_clip_tokenizer():
    tok = open_clip.get_tokenizer("ViT-B-32")
    assert tag_text(["red circle", "blue star"], 5) == "red circle, blue star"
    batch = collate([_sample(1, ["red circle"]), _sample(0)], tok, kmax=4)
    assert batch["tags"].shape == (2, 77) and batch["text"].shape == (2, 77)
    assert torch.equal(batch["tags"][0], tok(["red circle"])[0])
    assert int((batch["tags"][1] != 0).sum()) == 2  # the empty tag string: start and end tokens only


def test_refuses_empty_and_mixed_width():
    with pytest.raises(ValueError, match="at least one"):
        collate([], HashTokenizer(), 3)
    odd = _sample(1)
    odd.roi = torch.zeros(1, D + 1)
    with pytest.raises(ValueError, match="region width"):
        collate([_sample(1), odd], HashTokenizer(), 3)


def test_cached_tokenizer_matches_and_memoises():
    tok = RecordingTokenizer()
    cached = CachedTokenizer(tok, max_entries=2)
    texts = ["red circle", "", "red circle", "blue star", "green ring"]
    assert torch.equal(cached(texts), HashTokenizer()(texts))
    assert tok.calls == [["red circle", "", "blue star", "green ring"]]  # each distinct string once
    assert set(cached.cache) == {"red circle", ""}  # bounded
    assert torch.equal(cached(["red circle", "green ring"]), HashTokenizer()(["red circle", "green ring"]))
    assert tok.calls[-1] == ["green ring"]
    batch = collate([_sample(1, ["red circle"])], tok, kmax=2, tag_tokenizer=cached)
    assert torch.equal(batch["tags"], HashTokenizer()(["red circle"]))
