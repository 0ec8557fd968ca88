"""Tiny on-disk fixtures for the reader tests: JPEGs, webdataset shards with ROI sidecars, a tokenizer."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

D = 8  # region width in the fixtures (the last 6 columns are box geometry by the contract; unchecked here)
TAGS = ("red circle", "blue square", "green star", "small ring")


def jpeg_bytes(seed: int, size: int = 12) -> bytes:
    """A small random RGB JPEG."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def roi_for(seed: int, k: int, d: int = D) -> np.ndarray:
    return np.random.default_rng(seed + 10_000).standard_normal((k, d)).astype(np.float16)


def sample_parts(idx: int, k: int | None = None, d: int = D) -> dict[str, bytes]:
    """Members of sample ``idx``: jpg, txt, json, roi.npy (K = idx % 4 unless given), tags.json."""
    k = idx % 4 if k is None else k
    tags = [TAGS[(idx + j) % len(TAGS)] for j in range(k)]
    return {
        "jpg": jpeg_bytes(idx),
        "txt": f"caption {idx}".encode(),
        "json": json.dumps({"key": key_of(idx), "caption": f"caption {idx}"}).encode(),
        "roi.npy": npy_bytes(roi_for(idx, k, d)),
        "tags.json": json.dumps({"tags": tags, "boxes": [[0, 0, 4, 4]] * k}).encode(),
    }


def key_of(idx: int) -> str:
    return f"{idx:06d}"


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write a plain tar with the given (name, data) members, in order, deterministic headers."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_shards(
    folder: Path, n_shards: int, per_shard: int, *, sizes_json: bool = True, parts=sample_parts, d: int = D
) -> list[Path]:
    """``n_shards`` shards ``00000.tar``... of ``per_shard`` samples each (keys numbered globally) + sizes.json."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, sizes = [], {}
    for s in range(n_shards):
        members = []
        for i in range(s * per_shard, (s + 1) * per_shard):
            p = parts(i, d=d) if parts is sample_parts else parts(i)
            members += [(f"{key_of(i)}.{ext}", data) for ext, data in p.items()]
        path = write_tar(folder / f"{s:05d}.tar", members)
        paths.append(path)
        sizes[path.name] = per_shard
    if sizes_json:
        (folder / "sizes.json").write_text(json.dumps(sizes))
    return paths


def preprocess(img: Image.Image) -> torch.Tensor:
    """4x4 float tensor image plus a little torch-RNG noise (stands in for random augmentation)."""
    arr = torch.from_numpy(np.asarray(img.resize((4, 4)), dtype=np.float32)).permute(2, 0, 1) / 255
    return arr + 1e-3 * torch.rand(arr.shape)


class HashTokenizer:
    """Deterministic stand-in for open_clip's tokenizer: list[str] -> long [B, 6] (word hashes, 0-padded)."""

    context_length = 6

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [1] + [sum(map(ord, w)) % 1000 + 3 for w in t.replace(",", " ,").split()][: self.context_length - 2] + [2]
            out[i, : len(ids)] = torch.tensor(ids)
        return out
