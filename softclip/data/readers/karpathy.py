"""Image-text retrieval sets in Karpathy's split JSON (Flickr30K, COCO 5k).

``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}``. An image is
``images_root/filepath/filename`` (COCO: ``filepath`` is ``val2014``), or ``images_root/filename`` without
``filepath`` (Flickr30K). ``images_root`` defaults to the JSON's folder, or to ``images/`` beside it for entries
without ``filepath`` when that folder exists. Every image of the split must exist (DataError otherwise). An optional
``relevance.json`` beside the JSON, ``{"captions_of_image": [[caption index, ...]]}``, lists which captions
truly describe each test image (SynthScenes' many-to-many ground truth); indices are within the split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softclip.data import layout
from softclip.data.badsamples import DataError
from softclip.data.readers.base import EVAL_READERS, check_exist, require


@dataclass
class KarpathyData:
    """One split: ``captions[t]`` belongs to image ``text_to_image[t]`` (int64 [n_txt])."""

    dataset: str
    split: str
    image_paths: list[Path]
    captions: list[str]
    text_to_image: np.ndarray
    image_to_texts: list[list[int]]
    relevance: list[list[int]] | None


def _caption(sentence: dict) -> str:
    raw = sentence.get("raw")
    return (raw if raw is not None else " ".join(sentence.get("tokens", []))).strip()


def read_relevance(path: Path, split: str, n_images: int, n_texts: int) -> list[list[int]] | None:
    """``captions_of_image`` lists, checked against the split's image and caption counts; None when the file
    describes another split (its optional ``"split"`` key, default ``"test"``)."""
    doc = json.loads(path.read_text())
    if doc.get("split", "test") != split:
        return None
    rel = doc.get("captions_of_image")
    if not isinstance(rel, list) or len(rel) != n_images:
        raise DataError(f"{path}: 'captions_of_image' must list {n_images} images")
    out = [[int(t) for t in row] for row in rel]
    if any(not 0 <= t < n_texts for row in out for t in row):
        raise DataError(f"{path}: a caption index is outside [0, {n_texts})")
    return out


@EVAL_READERS.register("karpathy")
def read_karpathy(json_path: str | Path, images_root: str | Path | None = None, split: str = "test") -> KarpathyData:
    """Read one split of a Karpathy JSON (captions flattened in file order)."""
    json_path = require(Path(json_path), "Karpathy split JSON")
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    root = require(Path(images_root), "retrieval images root") if images_root is not None else json_path.parent
    flat_root = root / "images" if images_root is None and (root / "images").is_dir() else root
    entries = [e for e in doc.get("images", []) if e.get("split") == split]
    if not entries:
        have = sorted({e.get("split") for e in doc.get("images", [])} - {None})
        raise DataError(f"{json_path}: no images in split {split!r} (splits there: {have})")
    paths, captions, t2i, i2t = [], [], [], []
    for i, e in enumerate(entries):
        paths.append(root / e["filepath"] / e["filename"] if "filepath" in e else flat_root / e["filename"])
        caps = [_caption(s) for s in e.get("sentences", [])]
        i2t.append(list(range(len(captions), len(captions) + len(caps))))
        captions += caps
        t2i += [i] * len(caps)
    check_exist(paths, f"{json_path} split {split!r}")
    rel_path = json_path.parent / layout.RELEVANCE_FILE
    relevance = read_relevance(rel_path, split, len(paths), len(captions)) if rel_path.is_file() else None
    return KarpathyData(
        doc.get("dataset", json_path.stem), split, paths, captions, np.asarray(t2i, dtype=np.int64), i2t, relevance
    )
