"""Photometric and geometric image changes shared by the instance (views) and copy-detection (attacks) sets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


@dataclass(frozen=True)
class View:
    """A camera on a square world image: window centre (world px), window side (world px), rotation (degrees)."""

    cx: float
    cy: float
    side: float
    angle: float

    def affine(self, out: int) -> tuple[float, ...]:
        """PIL AFFINE coefficients mapping output pixel (x, y) to world coordinates."""
        k, t = self.side / out, math.radians(self.angle)
        c, s = math.cos(t), math.sin(t)
        h = out / 2
        return (k * c, -k * s, self.cx - k * (c * h - s * h), k * s, k * c, self.cy - k * (s * h + c * h))

    def to_output(self, pts: np.ndarray, out: int) -> np.ndarray:
        """Map world points float [P, 2] into output pixels [P, 2] (inverse of ``affine``)."""
        k, t = self.side / out, math.radians(self.angle)
        c, s = math.cos(t), math.sin(t)
        d = pts - np.array([self.cx, self.cy])
        local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
        return local / k + out / 2


def render_view(world: Image.Image, view: View, out: int, fill: tuple[int, int, int]) -> Image.Image:
    """Look at ``world`` through ``view``; outside the world is ``fill``. Returns RGB [out, out]."""
    return world.transform((out, out), Image.Transform.AFFINE, view.affine(out),
                           resample=Image.Resampling.BILINEAR, fillcolor=fill)


def boxes_in_view(boxes: list[tuple[int, int, int, int]], view: View, out: int) -> list[list[float]]:
    """Axis-aligned output-pixel boxes of world ``boxes`` after the view, clipped; invisible ones dropped."""
    res = []
    for x1, y1, x2, y2 in boxes:
        pts = view.to_output(np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], dtype=np.float64), out)
        lo, hi = np.clip(pts.min(0), 0, out), np.clip(pts.max(0), 0, out)
        if hi[0] - lo[0] >= 1 and hi[1] - lo[1] >= 1:
            res.append([float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])])
    return res


def union_box(boxes: list[list[float]], out: int) -> list[float]:
    """Smallest box holding ``boxes``, rounded to 0.1 px; the whole image when empty."""
    if not boxes:
        return [0.0, 0.0, float(out), float(out)]
    b = np.array(boxes)
    return [round(float(v), 1) for v in (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())]


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def occlude(rng: np.random.Generator, img: Image.Image, area: float) -> Image.Image:
    """Cover about ``area`` (fraction) of ``img`` with one flat rectangle of a random colour."""
    img = img.copy()
    w, h = img.size
    aspect = rng.uniform(0.5, 2.0)
    rw = min(w, max(1, int(round(math.sqrt(area * w * h * aspect)))))
    rh = min(h, max(1, int(round(area * w * h / rw))))
    x, y = int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1))
    ImageDraw.Draw(img).rectangle([x, y, x + rw - 1, y + rh - 1], fill=random_colour(rng))
    return img


def colour_jitter(rng: np.random.Generator, img: Image.Image, strength: float) -> Image.Image:
    """Brightness, contrast and saturation factors in 1 +- strength, then per-channel gains in 1 +- strength/2."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    gains = rng.uniform(1 - strength / 2, 1 + strength / 2, size=3)
    arr = np.asarray(img, dtype=np.float32) * gains
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def brightness(rng: np.random.Generator, img: Image.Image, strength: float) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(float(rng.uniform(1 - strength, 1 + strength)))


def blur(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.6)) * img.size[0] / 64))


def paint_over(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """Draw 2-5 random strokes, ellipses or rectangles over ``img``."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    width = max(1, w // 20)
    for _ in range(int(rng.integers(2, 6))):
        kind = int(rng.integers(3))
        x1, x2 = sorted(int(v) for v in rng.integers(0, w, size=2))
        y1, y2 = sorted(int(v) for v in rng.integers(0, h, size=2))
        colour = random_colour(rng)
        if kind == 0:
            draw.line([x1, y1, x2, y2], fill=colour, width=width)
        elif kind == 1:
            draw.ellipse([x1, y1, x1 + max(2, (x2 - x1) // 3), y1 + max(2, (y2 - y1) // 3)], fill=colour)
        else:
            draw.rectangle([x1, y1, x1 + max(2, (x2 - x1) // 3), y1 + max(2, (y2 - y1) // 3)], outline=colour, width=width)
    return img


def random_crop(rng: np.random.Generator, img: Image.Image, keep_area: float) -> Image.Image:
    """Crop a random window keeping ``keep_area`` of the surface (same aspect ratio)."""
    w, h = img.size
    f = math.sqrt(keep_area)
    cw, ch = max(1, int(round(w * f))), max(1, int(round(h * f)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def rotate(rng: np.random.Generator, img: Image.Image, max_deg: float, fill: tuple[int, int, int]) -> Image.Image:
    angle = float(rng.uniform(5, max_deg)) * (1 if rng.random() < 0.5 else -1)
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def mean_colour(img: Image.Image) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.asarray(img).reshape(-1, 3).mean(0))
