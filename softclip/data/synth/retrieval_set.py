"""Retrieval set (Karpathy split JSON, test split): 5 captions per image from different templates and subsets.

``relevance.json`` lists, per test image, every test caption that truly describes it (see ``captions.describes``),
which always includes the image's own five. Images carry their objects and sentences their mentions as extra keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from softclip.data.layout import KARPATHY_FILE, RELEVANCE_FILE, RETRIEVAL_DIR
from softclip.data.synth.base import OutputSet, chunks, register
from softclip.data.synth.captions import describes_matrix, make_captions
from softclip.data.synth.determinism import jpeg_bytes, rng_for, write_bytes, write_json
from softclip.data.synth.scenes import draw_scene, sample_scene
from softclip.data.synth.spec import SynthConfig

CAPTIONS_PER_IMAGE = 5
IMAGES_PER_UNIT = 250


def _units(spec: SynthConfig, seed: int) -> list[Any]:
    return chunks(spec.n_retrieval_images, IMAGES_PER_UNIT)


def _run_unit(spec: SynthConfig, seed: int, root: Path, unit: Any) -> list[Any]:
    out = []
    size = spec.image_size
    for index in range(*unit):
        objs = sample_scene(rng_for(seed, "retrieval/scene", index), spec, size)
        image = draw_scene(rng_for(seed, "retrieval/draw", index), spec, objs, size)
        caps = make_captions(rng_for(seed, "retrieval/caption", index), spec, objs, CAPTIONS_PER_IMAGE)
        write_bytes(root / RETRIEVAL_DIR / "images" / f"{index:06d}.jpg", jpeg_bytes(image, spec.jpeg_quality))
        out.append((objs, caps))
    return out


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _finalize(spec: SynthConfig, seed: int, root: Path, results: list[Any]) -> dict[str, Any]:
    items = [item for r in results for item in r]
    images, all_caps = [], []
    for imgid, (objs, caps) in enumerate(items):
        sentences = []
        for cap in caps:
            sentid = len(all_caps)
            all_caps.append(cap)
            sentences.append({"raw": cap.text, "tokens": _tokens(cap.text), "imgid": imgid, "sentid": sentid,
                              "mentions": cap.to_json()})
        images.append({"filepath": "images", "filename": f"{imgid:06d}.jpg", "imgid": imgid, "split": "test",
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
                       "objects": [o.to_json() for o in objs]})
    base = root / RETRIEVAL_DIR
    write_json(base / KARPATHY_FILE, {"dataset": "synthscenes", "images": images})
    rel = describes_matrix(all_caps, [objs for objs, _ in items]).T  # [I, C]
    write_json(base / RELEVANCE_FILE, {"captions_of_image": [np.flatnonzero(row).tolist() for row in rel]})
    n_img, n_cap = rel.shape
    return {
        "images": n_img, "captions": n_cap,
        "relevant_captions_per_image": round(float(rel.sum(1).mean()), 4) if n_img else 0.0,
        "relevant_images_per_caption": round(float(rel.sum(0).mean()), 4) if n_cap else 0.0,
        "subset_caption_fraction": round(sum(c.subset for c in all_caps) / max(1, n_cap), 4),
        "distinct_captions": len({c.text for c in all_caps}),
    }


RETRIEVAL = register(OutputSet("retrieval", RETRIEVAL_DIR, _units, _run_unit, _finalize))
