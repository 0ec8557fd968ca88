"""Per-sample decoding and validation shared by the training readers; each problem raises BadSample."""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import numpy as np
import torch
from PIL import Image

from softclip.data.badsamples import BadSample
from softclip.data.readers.base import Preprocess, Sample
from softclip.data.synth.captions import scene_codes

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def decode_image(data: bytes | None) -> Image.Image:
    """Decode image bytes fully into an RGB PIL image; BadSample("corrupt_image") if PIL cannot."""
    if not data:
        raise BadSample("corrupt_image", "empty image data")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except _PIL_ERRORS as err:
        raise BadSample("corrupt_image", f"{type(err).__name__}: {err}") from None


def decode_caption(data: bytes | str | None) -> str:
    """UTF-8 caption, stripped; BadSample for a missing, undecodable or empty caption."""
    if data is None:
        raise BadSample("missing_caption", "no .txt member")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise BadSample("bad_caption", f"not UTF-8: {err}") from None
    text = text.strip()
    if not text:
        raise BadSample("empty_caption", "caption is empty")
    return text


def check_roi(arr: Any, roi_dim: int) -> np.ndarray:
    """Validate region features: float16/float32, 2-D [K, roi_dim], finite. Returns them in their stored dtype
    (float16 sidecars stay float16 up to the model, which casts them on its device: half the bytes through the
    loader's shared memory and the host-to-device copy, the same values) as a writable [K, D] array."""
    if not isinstance(arr, np.ndarray):
        raise BadSample("bad_roi", f"expected an array, got {type(arr).__name__}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4):
        raise BadSample("bad_roi", f"dtype {arr.dtype}, expected float16 (or float32)")
    if arr.ndim != 2:
        raise BadSample("bad_roi", f"shape {arr.shape} has ndim {arr.ndim}, expected [K, {roi_dim}]")
    if arr.shape[1] != roi_dim:
        raise BadSample("bad_roi", f"shape {arr.shape}: D={arr.shape[1]}, expected roi_dim={roi_dim}")
    if not np.isfinite(arr).all():
        raise BadSample("bad_roi", "non-finite region features")
    return arr if arr.flags.writeable else arr.copy()


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=]?[a-z]\d+)', 'fortran_order': False, 'shape': \(([\d, ]*)\), *\} *\n?$")


def _fast_npy(data: bytes) -> np.ndarray | None:
    """Parse the common C-order .npy layout without ``np.load``'s ~0.3 ms header eval; None if unusual."""
    if data[:6] != b"\x93NUMPY" or data[6:7] not in (b"\x01", b"\x02", b"\x03"):
        return None
    width = 2 if data[6] == 1 else 4
    start = 8 + width + int.from_bytes(data[8 : 8 + width], "little")
    m = _NPY_HEADER.match(data[8 + width : start].rstrip(b" "))
    if m is None:
        return None
    dtype = np.dtype(m.group(1).decode())
    shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
    count = math.prod(shape)
    if dtype.hasobject or len(data) - start != count * dtype.itemsize:
        return None  # let np.load produce the precise error
    return np.frombuffer(data, dtype, count, start).reshape(shape)


def load_roi_npy(data: bytes | None, roi_dim: int) -> np.ndarray:
    """Read a ``.roi.npy`` member (no pickles) and validate it; float16 or float32 [K, D] as stored."""
    if data is None:
        raise BadSample("missing_sidecar", "no .roi.npy member")
    arr = _fast_npy(data)
    if arr is None:
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise BadSample("bad_roi", f"unreadable .roi.npy: {err}") from None
    return check_roi(arr, roi_dim)


def parse_tags_json(data: bytes | None, k: int) -> list[str]:
    """Read a ``.tags.json`` member ``{"tags": [str]*K, "boxes": [[x1,y1,x2,y2]]*K}``; K must match the ROI."""
    if data is None:
        raise BadSample("missing_sidecar", "no .tags.json member")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadSample("bad_tags", f"invalid JSON: {err}") from None
    tags = obj.get("tags") if isinstance(obj, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadSample("bad_tags", "'tags' must be a list of strings")
    if len(tags) != k:
        raise BadSample("sidecar_mismatch", f"{len(tags)} tags for {k} regions")
    return tags


def parse_scene_json(data: bytes | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene codes from a SynthScenes sample's ``.json`` (its ``objects`` and ``caption_mentions``)."""
    if data is None:
        raise BadSample("missing_scene", "no .json member (scene annotations)")
    try:
        obj = json.loads(data)
        image, caption = scene_codes(obj["objects"], obj["caption_mentions"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BadSample("bad_scene", f"no usable objects/caption_mentions in .json: {type(err).__name__}: {err}") from None
    return torch.from_numpy(image), torch.from_numpy(caption)


def make_sample(
    image: Image.Image, caption: str, roi: np.ndarray, tags: list[str], key: str, source: str, preprocess: Preprocess,
    scene: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Sample:  # fmt: skip
    """Apply ``preprocess`` and wrap the parts; a preprocess failure on a decoded image counts as corrupt."""
    try:
        tensor = preprocess(image)
    except _PIL_ERRORS as err:
        raise BadSample("corrupt_image", f"preprocess failed: {type(err).__name__}: {err}") from None
    return Sample(tensor, caption, torch.from_numpy(roi), list(tags), key, source, scene)
