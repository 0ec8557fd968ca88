"""Instance retrieval set (revisitop layout): landmarks are fixed scene layouts seen through changing views.

Each landmark is one "world" scene (3-5 objects, drawn at twice the image size) with one query view (its
``bbx`` boxes the landmark's objects) and database views: easy (small shift/scale/rotation, brightness), hard
(zoomed crops, rotation, occlusion, colour shifts) and junk (tiny in another scene, or mostly occluded).
Distractors are other worlds. Names are opaque and the database order is a seeded shuffle.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from softclip.data.layout import INSTANCE_DIR, INSTANCE_NAME
from softclip.data.synth.base import OutputSet, chunks, register
from softclip.data.synth.determinism import jpeg_bytes, rng_for, write_bytes
from softclip.data.synth.scenes import Obj, background, draw_scene, sample_scene
from softclip.data.synth.spec import SynthConfig
from softclip.data.synth.views import (
    View,
    boxes_in_view,
    brightness,
    colour_jitter,
    mean_colour,
    occlude,
    render_view,
    union_box,
)

KINDS = ("easy", "hard", "junk")
LANDMARKS_PER_UNIT = 10
DISTRACTORS_PER_UNIT = 200
PICKLE_PROTOCOL = 4


def query_name(landmark: int) -> str:
    return f"query_{landmark:05d}"


def plan(spec: SynthConfig, seed: int) -> list[tuple[str, int, int]]:
    """The database in imlist order: (kind, landmark or distractor index, view index); kind 'distractor' or KINDS."""
    counts = {"easy": spec.n_easy_views, "hard": spec.n_hard_views, "junk": spec.n_junk_views}
    entries = [(kind, lm, v) for lm in range(spec.n_landmarks) for kind in KINDS for v in range(counts[kind])]
    entries += [("distractor", d, 0) for d in range(spec.n_instance_distractors)]
    order = rng_for(seed, "instance/plan").permutation(len(entries))
    return [entries[i] for i in order]


def db_name(position: int) -> str:
    return f"img_{position:06d}"


def _world(spec: SynthConfig, seed: int, stream: str, index: int) -> tuple[Image.Image, list[Obj]]:
    rng = rng_for(seed, stream, index)
    canvas = 2 * spec.image_size
    n = min(spec.n_object_types, int(rng.integers(3, 6)))
    objs = sample_scene(rng, spec, canvas, n_objects=n)
    return draw_scene(rng, spec, objs, canvas), objs


def _near_view(rng: np.random.Generator, world: int, shift: float, scale: tuple[float, float], rot: float) -> View:
    c = world / 2 + rng.uniform(-shift, shift, size=2) * world
    return View(float(c[0]), float(c[1]), float(rng.uniform(*scale)) * world, float(rng.uniform(-rot, rot)))


def _hard_view(rng: np.random.Generator, world: int, objs: list[Obj], out: int) -> View:
    for _ in range(20):  # keep at least one object of the landmark in sight
        side = float(rng.uniform(0.5, 0.75)) * world
        cx, cy = rng.uniform(side / 2, world - side / 2, size=2)
        view = View(float(cx), float(cy), side, float(rng.uniform(10, 35) * rng.choice([-1, 1])))
        if boxes_in_view([o.box for o in objs], view, out):
            break
    return view


def render_db_view(rng: np.random.Generator, spec: SynthConfig, kind: str, world: Image.Image,
                   objs: list[Obj]) -> Image.Image:
    """One database view of ``kind`` (easy, hard, junk or distractor) of ``world``."""
    out, size = spec.image_size, world.size[0]
    fill = mean_colour(world)
    if kind == "hard":
        img = render_view(world, _hard_view(rng, size, objs, out), out, fill)
        img = colour_jitter(rng, img, 0.35)
        return occlude(rng, img, float(rng.uniform(0.1, 0.25)))
    if kind == "junk" and rng.random() < 0.5:  # tiny, inside another background
        canvas = Image.fromarray(background(rng, out, spec.texture))
        small = max(4, int(round(out * rng.uniform(0.2, 0.3))))
        x, y = (int(v) for v in rng.integers(0, out - small + 1, size=2))
        canvas.paste(world.resize((small, small), Image.Resampling.BILINEAR), (x, y))
        return canvas
    img = brightness(rng, render_view(world, _near_view(rng, size, 0.06, (0.85, 1.1), 4.0), out, fill), 0.15)
    return occlude(rng, img, float(rng.uniform(0.7, 0.85))) if kind == "junk" else img


def _units(spec: SynthConfig, seed: int) -> list[Any]:
    return ([("landmarks", a, b) for a, b in chunks(spec.n_landmarks, LANDMARKS_PER_UNIT)]
            + [("distractors", a, b) for a, b in chunks(spec.n_instance_distractors, DISTRACTORS_PER_UNIT)])


def _write(root: Path, name: str, img: Image.Image, quality: int) -> None:
    write_bytes(root / INSTANCE_DIR / "jpg" / f"{name}.jpg", jpeg_bytes(img, quality))


def _run_unit(spec: SynthConfig, seed: int, root: Path, unit: Any) -> list[Any]:
    part, start, stop = unit
    is_landmark = part == "landmarks"
    wanted = {}
    for pos, (kind, index, v) in enumerate(plan(spec, seed)):
        if start <= index < stop and (kind != "distractor") == is_landmark:
            wanted.setdefault(index, []).append((kind, v, db_name(pos)))
    bbxs = []
    for index in range(start, stop):
        stream = "instance/landmark" if is_landmark else "instance/distractor"
        world, objs = _world(spec, seed, stream, index)
        for kind, v, name in sorted(wanted.get(index, [])):
            rng = rng_for(seed, f"{stream}{index}/{kind}", v)
            _write(root, name, render_db_view(rng, spec, kind, world, objs), spec.jpeg_quality)
        if is_landmark:
            rng = rng_for(seed, f"{stream}{index}/query")
            view = _near_view(rng, world.size[0], 0.02, (0.95, 1.0), 0.0)
            _write(root, query_name(index), render_view(world, view, spec.image_size, mean_colour(world)),
                   spec.jpeg_quality)
            bbxs.append(union_box(boxes_in_view([o.box for o in objs], view, spec.image_size), spec.image_size))
    return bbxs


def _finalize(spec: SynthConfig, seed: int, root: Path, results: list[Any]) -> dict[str, Any]:
    entries = plan(spec, seed)
    bbxs = [b for r in results[: len(chunks(spec.n_landmarks, LANDMARKS_PER_UNIT))] for b in r]
    gnd = [{"bbx": bbx, "easy": [], "hard": [], "junk": []} for bbx in bbxs]
    for pos, (kind, index, _) in enumerate(entries):
        if kind != "distractor":
            gnd[index][kind].append(pos)
    data = {"imlist": [db_name(p) for p in range(len(entries))],
            "qimlist": [query_name(q) for q in range(spec.n_landmarks)], "gnd": gnd}
    write_bytes(root / INSTANCE_DIR / f"gnd_{INSTANCE_NAME}.pkl", pickle.dumps(data, protocol=PICKLE_PROTOCOL))
    return {"name": INSTANCE_NAME, "queries": spec.n_landmarks, "database": len(entries),
            "easy_per_query": spec.n_easy_views, "hard_per_query": spec.n_hard_views,
            "junk_per_query": spec.n_junk_views, "distractors": spec.n_instance_distractors}


INSTANCE = register(OutputSet("instance", INSTANCE_DIR, _units, _run_unit, _finalize))
