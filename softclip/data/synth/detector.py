"""A simulated object-attribute detector standing in for VinVL: boxes, region features and tags.

Region features are a fixed random projection of the true object's one-hot attributes (shape, colour, size)
and box geometry, plus Gaussian noise. The projection is seeded by ``DetectorConfig.seed`` alone, never by the
scene seed, so every split (and every dataset generated with the same detector) shares one feature space.
The last 6 columns are VinVL's box geometry (x1/W, y1/H, x2/W, y2/H, w/W, h/H).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softclip.data.layout import BOX_GEOMETRY_DIMS
from softclip.data.synth.scenes import Obj
from softclip.data.synth.spec import COLOURS, SHAPES, SIZES, DetectorConfig, SynthConfig

_PROJECTION_STREAM = 0x5EED_DE7  # separates the projection's random stream from any scene stream
_N_ONEHOT = len(SHAPES) + len(COLOURS) + len(SIZES)


@dataclass
class Detections:
    """Regions of one image: features float16 [K, D], K tags and K pixel boxes [x1, y1, x2, y2]."""

    features: np.ndarray
    tags: list[str]
    boxes: list[list[float]]
    n_true: int  # regions coming from real objects (the rest are false boxes)


def tag_text(shape: int, colour: int, size: int) -> str:
    """'small red circle' (size >= 0) or 'red circle' (size -1)."""
    return " ".join(([SIZES[size]] if size >= 0 else []) + [COLOURS[colour], SHAPES[shape]])


class Detector:
    """Simulated detector; ``detect`` is a pure function of its arguments and the detector seed."""

    def __init__(self, cfg: DetectorConfig, spec: SynthConfig) -> None:
        self.cfg = cfg
        self.n_shapes, self.n_colours = spec.n_shapes, spec.n_colours
        rng = np.random.default_rng([cfg.seed, _PROJECTION_STREAM])
        in_dim = _N_ONEHOT + 4
        # three one-hot ones plus geometry of order 1 give unit-variance feature entries
        self.projection = rng.normal(0.0, 1.0 / np.sqrt(3.0), size=(in_dim, cfg.roi_dim - BOX_GEOMETRY_DIMS))

    def _signal(self, shape: int, colour: int, size: int, box: np.ndarray, canvas: int) -> np.ndarray:
        x = np.zeros(self.projection.shape[0])
        x[shape] = x[len(SHAPES) + colour] = x[len(SHAPES) + len(COLOURS) + size] = 1.0
        x1, y1, x2, y2 = box / canvas
        x[_N_ONEHOT:] = ((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, x2 - x1, y2 - y1)
        return x @ self.projection

    def _tag(self, rng: np.random.Generator, attrs: list[int]) -> str:
        """Tag for attributes (shape, colour, size); maybe drops the size, maybe corrupts one named attribute."""
        shape, colour, size = attrs
        if rng.random() >= self.cfg.tag_size_prob:
            size = -1
        if rng.random() < self.cfg.tag_error:
            which = int(rng.integers(3 if size >= 0 else 2))
            n_values = (self.n_shapes, self.n_colours, len(SIZES))[which]
            value = (shape, colour, size)[which]
            wrong = (value + int(rng.integers(1, n_values))) % n_values
            shape, colour, size = [wrong if k == which else v for k, v in enumerate((shape, colour, size))]
        return tag_text(shape, colour, size)

    def _jitter(self, rng: np.random.Generator, box: tuple[int, int, int, int], canvas: int) -> np.ndarray:
        side = max(box[2] - box[0], box[3] - box[1])
        x1, y1, x2, y2 = (min(canvas, max(0.0, v + d))
                          for v, d in zip(box, rng.normal(0.0, self.cfg.box_jitter * side, size=4).tolist(), strict=True))
        x1, y1 = min(x1, canvas - 1.0), min(y1, canvas - 1.0)
        x2, y2 = min(canvas, max(x2, x1 + 1.0)), min(canvas, max(y2, y1 + 1.0))
        return np.round(np.array([x1, y1, x2, y2]), 1)

    def detect(self, rng: np.random.Generator, objs: list[Obj], canvas: int) -> Detections:
        """Detect ``objs`` on a ``canvas``-pixel square image; regions come in random order."""
        feats, tags, boxes = [], [], []
        for o in objs:
            if rng.random() < self.cfg.missed_boxes:
                continue
            box = self._jitter(rng, o.box, canvas)
            feats.append(self._signal(o.shape, o.colour, o.size, box, canvas))
            tags.append(self._tag(rng, [o.shape, o.colour, o.size]))
            boxes.append(box)
        n_true = len(feats)
        for _ in range(int(rng.poisson(self.cfg.false_boxes))):
            side = rng.uniform(0.1, 0.5) * canvas
            x1, y1 = rng.uniform(0, canvas - side, size=2)
            boxes.append(np.round(np.array([x1, y1, x1 + side, y1 + side]), 1))
            feats.append(rng.normal(0.0, 1.0, size=self.projection.shape[1]))
            attrs = [int(rng.integers(self.n_shapes)), int(rng.integers(self.n_colours)), int(rng.integers(len(SIZES)))]
            tags.append(self._tag(rng, attrs))
        order = rng.permutation(len(feats))
        dim = self.cfg.roi_dim
        out = np.zeros((len(feats), dim), dtype=np.float32)
        noise = rng.normal(0.0, self.cfg.feature_noise, size=(len(feats), dim - BOX_GEOMETRY_DIMS))
        for row, k in enumerate(order):
            b = boxes[k] / canvas
            out[row, : dim - BOX_GEOMETRY_DIMS] = feats[k] + noise[row]
            out[row, dim - BOX_GEOMETRY_DIMS:] = (b[0], b[1], b[2], b[3], b[2] - b[0], b[3] - b[1])
        return Detections(out.astype(np.float16), [tags[k] for k in order],
                          [[float(v) for v in boxes[k]] for k in order], n_true)
