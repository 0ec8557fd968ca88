"""Copy-detection set (Copydays layout): originals, strong attacks, JPEG qualities, crops, distractors, whitening.

Originals are scenes of 3-5 objects. Strong attacks chain at least three of crop, rotation, colour jitter, blur
and paint-over. ``jpegqual/{q}`` re-encodes the original at quality q (encoder-default chroma subsampling, as
a real re-save would); ``crops/{pct}`` removes pct% of the surface (the crop keeps its reduced size).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from softclip.data.layout import COPYDAYS_DIR, COPYDAYS_DISTRACTORS, COPYDAYS_WHITENING
from softclip.data.synth.base import OutputSet, chunks, register
from softclip.data.synth.determinism import jpeg_bytes, rng_for, write_bytes
from softclip.data.synth.scenes import draw_scene, sample_scene
from softclip.data.synth.spec import SynthConfig
from softclip.data.synth.views import blur, colour_jitter, mean_colour, paint_over, random_crop, rotate

ORIGINALS_PER_UNIT = 25
EXTRAS_PER_UNIT = 250
MIN_ATTACKS = 3


def _crop(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    return random_crop(rng, img, float(rng.uniform(0.4, 0.75)))


def _rotate(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    return rotate(rng, img, 30.0, mean_colour(img))


ATTACKS: dict[str, Callable[[np.random.Generator, Image.Image], Image.Image]] = {
    "crop": _crop,
    "rotate": _rotate,
    "colour": lambda rng, img: colour_jitter(rng, img, 0.4),
    "blur": blur,
    "paint": paint_over,
}


def strong_attack(rng: np.random.Generator, img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Apply a random chain of at least ``MIN_ATTACKS`` attacks (in ATTACKS order); returns the image and names."""
    names = list(ATTACKS)
    chosen = [n for n in names if rng.random() < 0.6]
    while len(chosen) < MIN_ATTACKS:
        extra = names[int(rng.integers(len(names)))]
        if extra not in chosen:
            chosen.append(extra)
    chosen.sort(key=names.index)
    for name in chosen:
        img = ATTACKS[name](rng, img)
    return img, chosen


def _scene(spec: SynthConfig, seed: int, stream: str, index: int, n_min: int) -> Image.Image:
    rng = rng_for(seed, stream, index)
    n = min(spec.n_object_types, int(rng.integers(n_min, 6)))
    objs = sample_scene(rng, spec, spec.image_size, n_objects=n)
    return draw_scene(rng, spec, objs, spec.image_size)


def _units(spec: SynthConfig, seed: int) -> list[Any]:
    return ([("originals", a, b) for a, b in chunks(spec.n_copydays_originals, ORIGINALS_PER_UNIT)]
            + [(COPYDAYS_DISTRACTORS, a, b) for a, b in chunks(spec.n_copydays_distractors, EXTRAS_PER_UNIT)]
            + [(COPYDAYS_WHITENING, a, b) for a, b in chunks(spec.n_whitening, EXTRAS_PER_UNIT)])


def _write_block(spec: SynthConfig, seed: int, base: Path, block: int) -> int:
    """Write one original and all its attacked copies; returns the number of copies."""
    original = _scene(spec, seed, "copydays/original", block, 3)
    write_bytes(base / "original" / f"{block:04d}00.jpg", jpeg_bytes(original, spec.jpeg_quality))
    for v in range(1, spec.n_copydays_strong + 1):
        attacked, _ = strong_attack(rng_for(seed, f"copydays/strong{block}", v), original)
        write_bytes(base / "strong" / f"{block:04d}{v:02d}.jpg", jpeg_bytes(attacked, spec.jpeg_quality))
    for q in spec.copydays_jpeg_qualities:
        write_bytes(base / "jpegqual" / str(q) / f"{block:04d}01.jpg", jpeg_bytes(original, q, subsampling=None))
    for pct in spec.copydays_crop_pcts:
        crop = random_crop(rng_for(seed, f"copydays/crop{block}", pct), original, 1 - pct / 100)
        write_bytes(base / "crops" / str(pct) / f"{block:04d}01.jpg", jpeg_bytes(crop, spec.jpeg_quality))
    return spec.n_copydays_strong + len(spec.copydays_jpeg_qualities) + len(spec.copydays_crop_pcts)


def _run_unit(spec: SynthConfig, seed: int, root: Path, unit: Any) -> int:
    part, start, stop = unit
    base = root / COPYDAYS_DIR
    if part == "originals":
        return sum(_write_block(spec, seed, base, block) for block in range(start, stop))
    for i in range(start, stop):
        img = _scene(spec, seed, f"copydays/{part}", i, 1)
        write_bytes(base / part / f"{i:06d}.jpg", jpeg_bytes(img, spec.jpeg_quality))
    return stop - start


def _finalize(spec: SynthConfig, seed: int, root: Path, results: list[Any]) -> dict[str, Any]:
    n_orig_units = len(chunks(spec.n_copydays_originals, ORIGINALS_PER_UNIT))
    return {"originals": spec.n_copydays_originals, "queries": sum(results[:n_orig_units]),
            "strong": spec.n_copydays_originals * spec.n_copydays_strong,
            "jpeg_qualities": list(spec.copydays_jpeg_qualities), "crop_pcts": list(spec.copydays_crop_pcts),
            "distractors": spec.n_copydays_distractors, "whitening": spec.n_whitening}


COPYDAYS = register(OutputSet("copydays", COPYDAYS_DIR, _units, _run_unit, _finalize))
