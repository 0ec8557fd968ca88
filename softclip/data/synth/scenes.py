"""Scene sampling and drawing: objects (shape x colour x size) on muted textured backgrounds, with PIL.

Objects in one scene differ in (shape, colour), so a caption's mention names at most one object of its image.
Shapes are drawn as anti-aliased masks (4x supersampled, cached per shape and pixel size) and pasted in a flat
colour with a small per-object jitter.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from softclip.data.synth.spec import COLOURS, SHAPES, SIZES, SynthConfig

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 165, 45), "blue": (35, 75, 225), "yellow": (245, 220, 30),
    "purple": (140, 45, 190), "white": (250, 250, 250), "orange": (250, 140, 20), "black": (15, 15, 15),
    "cyan": (30, 210, 220), "pink": (250, 125, 195), "brown": (120, 70, 30),
}
COLOUR_JITTER = 12
MAX_OVERLAP = 0.1  # intersection over the smaller box's area
PLACEMENT_TRIES = 30
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Obj:
    """One drawn object: attribute indices into SHAPES/COLOURS/SIZES and its tight box in pixels."""

    shape: int
    colour: int
    size: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
    place: tuple[int, int, int]  # x, y, side of the square the shape is drawn in

    def to_json(self) -> dict:
        return {"shape": SHAPES[self.shape], "colour": COLOURS[self.colour], "size": SIZES[self.size],
                "box": list(self.box)}

    @property
    def type_index(self) -> int:
        """Index of (shape, colour) over all available shapes and colours."""
        return self.shape * len(COLOURS) + self.colour


def _polygon(n: int, r: float, start: float = -90.0) -> list[tuple[float, float]]:
    return [(0.5 + r * math.cos(math.radians(start + 360 * k / n)), 0.5 + r * math.sin(math.radians(start + 360 * k / n)))
            for k in range(n)]


def _star() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = 0.5 if k % 2 == 0 else 0.21
        a = math.radians(-90 + 36 * k)
        pts.append((0.5 + r * math.cos(a), 0.55 + r * math.sin(a)))
    return pts


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(48):
        t = 2 * math.pi * k / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((0.5 + x / 34, 0.47 - y / 34))
    return pts


def _ellipse(draw: ImageDraw.ImageDraw, n: int, box: tuple[float, float, float, float], fill: int = 255) -> None:
    draw.ellipse([box[0] * n, box[1] * n, box[2] * n, box[3] * n], fill=fill)


def _poly(draw: ImageDraw.ImageDraw, n: int, pts: list[tuple[float, float]]) -> None:
    draw.polygon([(x * n, y * n) for x, y in pts], fill=255)


def _rect(draw: ImageDraw.ImageDraw, n: int, box: tuple[float, float, float, float]) -> None:
    draw.rectangle([box[0] * n, box[1] * n, box[2] * n, box[3] * n], fill=255)


def _cross(draw: ImageDraw.ImageDraw, n: int) -> None:
    _rect(draw, n, (0.33, 0.02, 0.67, 0.98))
    _rect(draw, n, (0.02, 0.33, 0.98, 0.67))


def _ring(draw: ImageDraw.ImageDraw, n: int) -> None:
    _ellipse(draw, n, (0.02, 0.02, 0.98, 0.98))
    _ellipse(draw, n, (0.27, 0.27, 0.73, 0.73), fill=0)


def _crescent(draw: ImageDraw.ImageDraw, n: int) -> None:
    _ellipse(draw, n, (0.02, 0.02, 0.98, 0.98))
    _ellipse(draw, n, (0.3, -0.05, 1.15, 0.8), fill=0)


# Each drawer paints its shape in white on an n x n 'L' mask; coordinates are fractions of n.
SHAPE_DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, int], None]] = {
    "circle": lambda d, n: _ellipse(d, n, (0.02, 0.02, 0.98, 0.98)),
    "square": lambda d, n: _rect(d, n, (0.08, 0.08, 0.92, 0.92)),
    "triangle": lambda d, n: _poly(d, n, [(0.5, 0.04), (0.98, 0.9), (0.02, 0.9)]),
    "star": lambda d, n: _poly(d, n, _star()),
    "cross": _cross,
    "ring": _ring,
    "diamond": lambda d, n: _poly(d, n, [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]),
    "heart": lambda d, n: _poly(d, n, _heart()),
    "hexagon": lambda d, n: _poly(d, n, _polygon(6, 0.49, start=0.0)),
    "crescent": _crescent,
}


@lru_cache(maxsize=4096)
def shape_mask(shape: int, side: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Anti-aliased 'L' mask of ``SHAPES[shape]`` at ``side`` pixels and its tight box within the square."""
    big = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    SHAPE_DRAWERS[SHAPES[shape]](ImageDraw.Draw(big), side * SUPERSAMPLE)
    mask = big.resize((side, side), Image.Resampling.BOX)
    bbox = mask.point(lambda v: 255 if v >= 64 else 0).getbbox() or (0, 0, side, side)
    return mask, bbox


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x and y coordinates in [0, 1) float32 [size, size] and a bilinear 6 -> size upsampling matrix [size, 6]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    pos = np.clip((np.arange(size) + 0.5) * 6 / size - 0.5, 0, 5)
    lo = np.minimum(pos.astype(int), 4)
    up = np.zeros((size, 6), dtype=np.float32)
    up[np.arange(size), lo] = 1 - (pos - lo)
    up[np.arange(size), lo + 1] = pos - lo
    return xx, yy, up


def background(rng: np.random.Generator, size: int, texture: float) -> np.ndarray:
    """Muted textured background, uint8 [size, size, 3]: gradient + smooth noise + optional stripes + grain."""
    u = rng.random(10)
    base = np.array(colorsys.hsv_to_rgb(u[0], 0.05 + 0.2 * u[1], 0.38 + 0.24 * u[2])) * 255
    xx, yy, up = _grid(size)
    c, s = math.cos(2 * math.pi * u[3]), math.sin(2 * math.pi * u[3])
    ramp = (xx * c + yy * s - 0.5 * (c + s)) * np.float32(texture * (15 + 25 * u[4]))
    tint = np.where(u[5:8] < 0.5, -1.0, 1.0)  # the gradient shifts the hue a little
    grey = up @ (rng.standard_normal((6, 6), dtype=np.float32) * np.float32(18 * texture)) @ up.T
    grey += (rng.random((size, size), dtype=np.float32) - np.float32(0.5)) * np.float32(17 * texture)
    if u[8] < 0.35:
        a, freq = math.pi * u[9], (4 + 6 * rng.random()) * 2 * math.pi
        grey += np.sin((xx * math.cos(a) + yy * math.sin(a)) * np.float32(freq)) * np.float32(12 * texture)
    img = np.empty((size, size, 3), dtype=np.uint8)
    for ch in range(3):  # channel by channel: broadcasting over a trailing axis of 3 is slow
        plane = ramp * np.float32(tint[ch]) + grey
        plane += np.float32(base[ch])
        img[..., ch] = np.clip(plane, 0, 255, out=plane)
    return img


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1)


def object_side(rng: np.random.Generator, spec: SynthConfig, size: int, canvas: int) -> int:
    """Pixel side of an object of size index ``size`` on a ``canvas``-pixel image."""
    frac = (spec.small_size, spec.large_size)[size] + rng.uniform(-spec.size_jitter, spec.size_jitter)
    return max(4, int(round(frac * canvas)))


def sample_attributes(rng: np.random.Generator, spec: SynthConfig, n: int) -> list[tuple[int, int, int]]:
    """``n`` (shape, colour, size) triples with distinct (shape, colour) among the enabled ones."""
    pairs = rng.permutation(spec.n_shapes * spec.n_colours)[:n]
    sizes = rng.integers(0, len(SIZES), size=n)
    return [(int(p) // spec.n_colours, int(p) % spec.n_colours, int(s)) for p, s in zip(pairs, sizes, strict=True)]


def place_objects(rng: np.random.Generator, spec: SynthConfig, attrs: list[tuple[int, int, int]], canvas: int) -> list[Obj]:
    """Place objects at mostly non-overlapping positions (rejection sampling; the least overlap wins)."""
    objs: list[Obj] = []
    for shape, colour, size in attrs:
        side = min(object_side(rng, spec, size, canvas), canvas)
        _, (bx1, by1, bx2, by2) = shape_mask(shape, side)
        best, best_ov = None, math.inf
        for x, y in rng.integers(0, canvas - side + 1, size=(PLACEMENT_TRIES, 2)).tolist():
            box = (x + bx1, y + by1, x + bx2, y + by2)
            ov = max((_overlap(box, o.box) for o in objs), default=0.0)
            if ov < best_ov:
                best, best_ov = (x, y, box), ov
            if ov <= MAX_OVERLAP:
                break
        x, y, box = best
        objs.append(Obj(shape, colour, size, box, (x, y, side)))
    return objs


def sample_scene(rng: np.random.Generator, spec: SynthConfig, canvas: int, n_objects: int | None = None) -> list[Obj]:
    """A random scene: 1..max_objects objects (or exactly ``n_objects``) placed on a ``canvas`` square."""
    n = int(rng.integers(1, spec.max_objects + 1)) if n_objects is None else n_objects
    return place_objects(rng, spec, sample_attributes(rng, spec, n), canvas)


def draw_scene(rng: np.random.Generator, spec: SynthConfig, objs: list[Obj], canvas: int) -> Image.Image:
    """Render ``objs`` on a fresh textured background; returns an RGB image of side ``canvas``."""
    img = Image.fromarray(background(rng, canvas, spec.texture))
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=(len(objs), 3)).tolist()
    for obj, jit in zip(objs, jitter, strict=True):
        rgb = tuple(min(255, max(0, v + j)) for v, j in zip(PALETTE[COLOURS[obj.colour]], jit, strict=True))
        x, y, side = obj.place
        mask, _ = shape_mask(obj.shape, side)
        img.paste(rgb, (x, y, x + side, y + side), mask)
    return img
