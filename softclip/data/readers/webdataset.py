"""Training shards in img2dataset's webdataset layout, with SoftCLIP's ROI sidecars (see ``layout.py``).

Tars are walked header by header (``tarstream``; no webdataset pipeline). A sample is a run of consecutive
members sharing a key (the member name up to the first dot of its basename) that holds an image; runs without
an image (webdataset's empty end-of-shard sample, stray metadata) are not samples. Samples are addressed by their index within the shard,
so a reader skips unwanted samples at the tar-header level without reading their data. A shard that ends
early or fails to parse (truncated) loses its remaining samples, each counted as ``truncated_shard``.

Epoch order: the shard list is permuted by (seed, epoch) and concatenated; rank ``r`` takes the ``r``-th of
``world_size`` equal contiguous slices (so ranks are disjoint, may share a boundary shard, and work with fewer
shards than ranks). With ``resampled`` each rank instead draws shards with replacement from (seed, epoch, rank).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from braceexpand import braceexpand

from softclip.data import layout
from softclip.data.badsamples import LOGGER, BadRecord, DataError
from softclip.data.readers.base import TRAIN_READERS, Preprocess, Sample, SourcePaths, require, rng_for
from softclip.data.readers.decode import (
    IMAGE_EXTS,
    decode_caption,
    decode_image,
    load_roi_npy,
    make_sample,
    parse_scene_json,
    parse_tags_json,
)
from softclip.data.readers.tarstream import Member, iter_members, read_data

Segment = tuple[int, int, int]  # (shard index, first sample index, stop sample index)


@dataclass
class RawSample:
    """Undecoded members of one sample: ``parts`` maps extension (``jpg``, ``txt``, ``roi.npy``...) to bytes."""

    key: str
    source: str
    parts: dict[str, bytes]


def split_member(name: str) -> tuple[str, str] | None:
    """Split a member name into (key, lower-case extension) at the first dot of its basename; None if none."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash:  # no dot, or a dot-file like ".DS_Store"
        return None
    return name[:dot], name[dot + 1 :].lower()


def iter_samples(f: BinaryIO) -> Iterator[tuple[str, dict[str, Member]]]:
    """Yield (key, {ext: member}) for each run of same-key members of the tar ``f`` that holds an image."""
    key: str | None = None
    group: dict[str, Member] = {}
    for member in iter_members(f):
        split = split_member(member.name)
        if split is None:
            continue
        if split[0] != key:
            if any(e in group for e in IMAGE_EXTS):
                yield key, group
            key, group = split[0], {}
        group[split[1]] = member
    if any(e in group for e in IMAGE_EXTS):
        yield key, group


def count_samples(path: str | Path) -> int:
    """Count the samples of a shard by walking its headers (no data is read); a damaged tail is not counted."""
    n = 0
    with open(path, "rb") as f:
        try:
            for _ in iter_samples(f):
                n += 1
        except OSError:
            pass
    return n


def expand_shards(spec: str | list[str], root: Path | None) -> list[Path]:
    """Shard paths from a directory, a file, a brace pattern (``{00000..00009}.tar``), a glob, or a list of
    those (a string may also join several with ``::``). Raises DataError naming a path that matches nothing."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[Path] = []
    for item in (part for s in items for part in str(s).split("::") if part):
        for pattern in braceexpand(item):
            p = Path(pattern).expanduser()
            p = p if p.is_absolute() or root is None else root / p
            if p.is_dir():
                found = sorted(p.glob("*.tar"))
                if not found:
                    raise DataError(f"no .tar shards in training directory {p}")
                out.extend(found)
            elif any(c in pattern for c in "*?["):
                found = sorted(Path(x) for x in glob.glob(str(p)))
                if not found:
                    raise DataError(f"training shard pattern matched nothing: {p}")
                out.extend(found)
            else:
                out.append(require(p, "training shard"))
    if not out:
        raise DataError(f"no training shards in {spec!r}")
    return out


def shard_sizes(paths: list[Path], log=LOGGER) -> list[int]:
    """Sample count per shard from ``sizes.json`` beside it, else by scanning the shard's headers."""
    cache: dict[Path, dict] = {}
    sizes = []
    for p in paths:
        folder = p.parent
        if folder not in cache:
            f = folder / layout.SIZES_FILE
            cache[folder] = json.loads(f.read_text()) if f.exists() else {}
        n = cache[folder].get(p.name)
        if n is None:
            n = count_samples(p)
            log.info("counted %d samples in %s (no %s entry)", n, p, layout.SIZES_FILE)
        sizes.append(int(n))
    return sizes


class WdsSource:
    """A set of webdataset shards as a training source (see the module docstring for the epoch order).

    Args:
        shards: shard paths.
        sizes: samples per shard (same order).
        roi_dim: expected region-feature width D.
        sidecars: read ``.roi.npy``/``.tags.json``; False gives every sample zero regions and no tags.
        scenes: read each sample's scene annotations from its ``.json`` (SynthScenes; the ``oracle`` target).
    """

    sequential = True

    def __init__(self, shards: list[Path], sizes: list[int], roi_dim: int, sidecars: bool = True,
                 scenes: bool = False) -> None:  # fmt: skip
        self.shards = [str(p) for p in shards]
        self.sizes = list(sizes)
        self.roi_dim = roi_dim
        self.sidecars, self.scenes = sidecars, scenes
        self.num_samples = sum(self.sizes)
        self.name = str(Path(self.shards[0]).parent) if self.shards else "wds"
        if self.num_samples == 0:
            raise DataError(f"the {len(self.shards)} training shards in {self.name} hold no samples")

    def input_stream(
        self, *, seed: int, epoch: int, rank: int, world_size: int, n: int, shuffle: bool, resampled: bool
    ) -> list[Segment]:
        """The rank's ``n`` samples for ``epoch`` as (shard, start, stop) segments in read order."""
        if resampled:
            rng, segs, total = rng_for(seed, epoch, rank, "resample"), [], 0
            weights = np.asarray(self.sizes, dtype=float) > 0
            choices = np.flatnonzero(weights)
            while total < n:
                i = int(choices[rng.integers(len(choices))])
                take = min(self.sizes[i], n - total)
                segs.append((i, 0, take))
                total += take
            return segs
        order = rng_for(seed, epoch, "shards").permutation(len(self.shards)) if shuffle else range(len(self.shards))
        lo, hi, pos, segs = rank * n, (rank + 1) * n, 0, []
        for i in order:
            a, b = max(lo, pos), min(hi, pos + self.sizes[i])
            if a < b:
                segs.append((int(i), a - pos, b - pos))
            pos += self.sizes[i]
        return segs

    def read(self, stream: list[Segment], wanted: np.ndarray) -> Iterator[tuple[int, RawSample | BadRecord]]:
        """Raw samples (or truncation records) for the sorted ``wanted`` stream positions, ascending."""
        pos0, wi = 0, 0
        for shard, start, stop in stream:
            hi = int(np.searchsorted(wanted, pos0 + stop - start))
            if wi < hi:
                idx = [int(q) - pos0 + start for q in wanted[wi:hi]]
                yield from self._read_shard(shard, idx, pos0 - start)
            wi, pos0 = hi, pos0 + stop - start

    def _read_shard(self, shard: int, indices: list[int], offset: int) -> Iterator[tuple[int, RawSample | BadRecord]]:
        path = self.shards[shard]
        name = Path(path).name
        k, seen = 0, 0
        detail = ""
        try:
            with open(path, "rb", buffering=1 << 16) as f:
                for idx, (key, members) in enumerate(iter_samples(f)):
                    seen = idx + 1
                    if idx < indices[k]:
                        continue
                    parts = {ext: read_data(f, m) for ext, m in members.items()}
                    yield idx + offset, RawSample(key, name, parts)
                    k += 1
                    if k == len(indices):
                        return
        except OSError as err:  # TarFormatError included
            detail = f"shard unreadable after {seen} samples: {type(err).__name__}: {err}"
        detail = detail or f"shard ended after {seen} samples, expected {self.sizes[shard]}"
        for idx in indices[k:]:
            yield idx + offset, BadRecord("truncated_shard", f"#{idx}", name, detail)

    def decode(self, raw: RawSample, preprocess: Preprocess) -> Sample:
        """Validate caption and sidecars, decode the image, preprocess. Raises BadSample."""
        parts = raw.parts
        caption = decode_caption(parts.get("txt"))
        if self.sidecars:
            roi = load_roi_npy(parts.get(layout.ROI_EXT), self.roi_dim)
            tags = parse_tags_json(parts.get(layout.TAGS_EXT), len(roi))
        else:
            roi, tags = np.zeros((0, self.roi_dim), np.float32), []
        scene = parse_scene_json(parts.get("json")) if self.scenes else None
        image = decode_image(parts[next(e for e in IMAGE_EXTS if e in parts)])
        return make_sample(image, caption, roi, tags, raw.key, raw.source, preprocess, scene)


@TRAIN_READERS.register("wds")
def open_wds(paths: SourcePaths, *, roi_dim: int, sidecars: bool = True, scenes: bool = False,
             log=LOGGER) -> WdsSource:  # fmt: skip
    """Open webdataset shards: ``paths.train`` (dir, pattern, list), default ``root/train`` or ``root``."""
    root = paths.root_path
    spec = paths.train
    if spec is None:
        if root is None:
            raise DataError("data.train: no training shards given (set data.train or data.root)")
        spec = str(root / layout.TRAIN_DIR) if (root / layout.TRAIN_DIR).is_dir() else str(root)
    shards = expand_shards(spec, root)
    return WdsSource(shards, shard_sizes(shards, log), roi_dim, sidecars, scenes)
