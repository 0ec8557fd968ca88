"""Zero-shot classification set (ImageFolder): one object per image, class = "colour shape" (e.g. "red circle").

Folders are ``colour_shape``; ``classnames.txt`` follows the sorted folder order. Sizes vary within a class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softclip.data.layout import ATTRIBUTES_FILE, CLASSNAMES_FILE, TEMPLATES_FILE, ZEROSHOT_DIR
from softclip.data.synth.base import OutputSet, chunks, register
from softclip.data.synth.determinism import jpeg_bytes, rng_for, write_bytes, write_json
from softclip.data.synth.scenes import draw_scene, place_objects
from softclip.data.synth.spec import COLOURS, SHAPES, SIZES, SynthConfig

# A few plain prompts; the 80 CLIP ImageNet templates ship separately with the evaluation suites.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of the {}.",
    "a drawing of the {}.",
    "the {} on a textured background.",
    "an image showing the {}.",
)
IMAGES_PER_UNIT = 500


def classes(spec: SynthConfig) -> list[tuple[str, int, int]]:
    """(folder, shape, colour) for every enabled colour-shape pair, in sorted folder order."""
    items = [(f"{COLOURS[c]}_{SHAPES[s]}", s, c) for s in range(spec.n_shapes) for c in range(spec.n_colours)]
    return sorted(items)


def _units(spec: SynthConfig, seed: int) -> list[Any]:
    return chunks(len(classes(spec)) * spec.n_zeroshot_per_class, IMAGES_PER_UNIT)


def _run_unit(spec: SynthConfig, seed: int, root: Path, unit: Any) -> list[int]:
    cls = classes(spec)
    size = spec.image_size
    sizes = []
    for index in range(*unit):
        folder, shape, colour = cls[index // spec.n_zeroshot_per_class]
        rng = rng_for(seed, "zeroshot", index)
        obj_size = int(rng.integers(len(SIZES)))
        objs = place_objects(rng, spec, [(shape, colour, obj_size)], size)
        image = draw_scene(rng, spec, objs, size)
        name = f"{index % spec.n_zeroshot_per_class:05d}.jpg"
        write_bytes(root / ZEROSHOT_DIR / "test" / folder / name, jpeg_bytes(image, spec.jpeg_quality))
        sizes.append(obj_size)
    return sizes


def _finalize(spec: SynthConfig, seed: int, root: Path, results: list[Any]) -> dict[str, Any]:
    cls = classes(spec)
    names = [folder.replace("_", " ") for folder, _, _ in cls]
    base = root / ZEROSHOT_DIR
    write_bytes(base / CLASSNAMES_FILE, ("\n".join(names) + "\n").encode())
    write_bytes(base / TEMPLATES_FILE, ("\n".join(TEMPLATES) + "\n").encode())
    attrs = {name: {"shape": SHAPES[s], "colour": COLOURS[c]} for name, (_, s, c) in zip(names, cls, strict=True)}
    write_json(base / ATTRIBUTES_FILE, attrs, indent=2)
    sizes = [s for r in results for s in r]
    return {"images": len(sizes), "classes": len(cls), "per_class": spec.n_zeroshot_per_class,
            "large_fraction": round(sum(sizes) / max(1, len(sizes)), 4), "templates": len(TEMPLATES)}


ZEROSHOT = register(OutputSet("zeroshot", ZEROSHOT_DIR, _units, _run_unit, _finalize))
