"""Attach VinVL region sidecars to existing img2dataset shards (``softclip data vinvl``).

img2dataset writes ``{key}.jpg/.txt/.json`` per sample; SoftCLIP's webdataset reader also wants
``{key}.roi.npy`` (float16 [K, 2054]: VinVL's 2,048-d region features and 6 box-geometry columns) and
``{key}.tags.json`` (``{"tags": [str] * K, "boxes": [[x1, y1, x2, y2]] * K}``, see ``layout.py``). This reads
VinVL's feature TSV (``id <TAB> K <TAB> base64 float32 [K, D]``) and label TSV (``id <TAB> JSON objects``) by
random access (``TsvIndex``) and rewrites every shard with the two sidecar members added after each sample's
own members (existing sidecars are replaced). Each shard is written to a temporary file beside its
destination and renamed into place, so an interrupted run leaves every shard either as it was or complete.

A sample is matched to its VinVL rows by ``id_field``: ``key`` (the member key, e.g. ``000000042``) or a field
of the sample's img2dataset ``.json`` (e.g. an ``image_id`` column kept with ``--save_additional_columns``).
Samples without a feature row (or with a malformed row, or labels that do not match) keep no sidecar and are
counted; the training reader then skips them as ``missing_sidecar``.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from softclip.atomic import atomic_write, write_json
from softclip.data import layout
from softclip.data.badsamples import BadSample, DataError
from softclip.data.readers.decode import IMAGE_EXTS
from softclip.data.readers.vinvl import TsvIndex, decode_features, decode_labels
from softclip.data.readers.webdataset import split_member

LOG = logging.getLogger("softclip.data")
VINVL_DIM = 2054
SIDECAR_EXTS = (layout.ROI_EXT, layout.TAGS_EXT)
REPORT = "vinvl_attach.json"


@dataclass
class Detections:
    """VinVL rows looked up by image id."""

    features: TsvIndex
    labels: TsvIndex
    roi_dim: int = VINVL_DIM

    def sidecars(self, image_id: str, meta: dict[str, Any]) -> tuple[bytes, bytes] | str:
        """(``.roi.npy`` bytes, ``.tags.json`` bytes) for ``image_id``, or the reason it has none."""
        row = self.features.get(image_id)
        if row is None:
            return "missing_features"
        try:
            roi = decode_features(row, self.roi_dim)
            lab = self.labels.get(image_id)
            if lab is None:
                return "missing_labels"
            tags = decode_labels(lab, len(roi))
            rects = _rects(lab)
        except BadSample as err:
            return err.reason
        boxes = rects if rects is not None else _boxes_from_geometry(roi, meta)
        buf = io.BytesIO()
        np.save(buf, roi.astype(np.float16), allow_pickle=False)
        tags_obj: dict[str, Any] = {"tags": tags}
        if boxes is not None:
            tags_obj["boxes"] = boxes
        return buf.getvalue(), json.dumps(tags_obj).encode()


def _rects(fields: list[str]) -> list[list[float]] | None:
    """The label row's ``rect`` boxes (pixels) when every object has one."""
    objs = json.loads(fields[1])
    objs = objs.get("objects", []) if isinstance(objs, dict) else objs
    rects = [o.get("rect") for o in objs]
    return [[float(v) for v in r] for r in rects] if all(isinstance(r, list) and len(r) == 4 for r in rects) else None


def _boxes_from_geometry(roi: np.ndarray, meta: dict[str, Any]) -> list[list[float]] | None:
    """Pixel boxes from the normalised x1/W, y1/H, x2/W, y2/H geometry columns and the image size."""
    w, h = meta.get("width"), meta.get("height")
    if not (isinstance(w, (int, float)) and isinstance(h, (int, float))):
        return None
    geo = roi[:, -layout.BOX_GEOMETRY_DIMS : -2].astype(np.float64) * np.array([w, h, w, h])
    return geo.round(2).tolist()


def _image_id(key: str, members: dict[str, bytes], id_field: str) -> tuple[str | None, dict[str, Any]]:
    try:
        meta = json.loads(members["json"]) if "json" in members else {}
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    if id_field == "key":
        return key.rsplit("/", 1)[-1], meta
    value = meta.get(id_field)
    return (None if value is None else str(value)), meta


def _add(out: tarfile.TarFile, name: str, data: bytes, like: tarfile.TarInfo | None) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    info.mtime = like.mtime if like is not None else 0
    out.addfile(info, io.BytesIO(data))


def _flush(out: tarfile.TarFile, key: str | None, group: list[tuple[tarfile.TarInfo, bytes]], det: Detections,
           id_field: str, counts: Counter) -> None:  # fmt: skip
    """Write one sample's members, then its sidecars (when it is a sample and has detections)."""
    if key is None:
        return
    parts = {split_member(info.name)[1]: data for info, data in group}
    is_sample = any(e in parts for e in IMAGE_EXTS)
    for info, data in group:
        if is_sample and split_member(info.name)[1] in SIDECAR_EXTS:
            continue  # replaced below
        out.addfile(info, io.BytesIO(data))
    if not is_sample:
        return
    counts["samples"] += 1
    image_id, meta = _image_id(key, parts, id_field)
    found = "missing_id" if image_id is None else det.sidecars(image_id, meta)
    if isinstance(found, str):
        counts[found] += 1
        return
    counts["attached"] += 1
    for ext, data in zip(SIDECAR_EXTS, found, strict=True):
        _add(out, f"{key}.{ext}", data, group[0][0])


def rewrite_shard(src: Path, f: IO[bytes], det: Detections, id_field: str) -> Counter:
    """Copy the tar ``src`` into ``f`` with sidecars added per sample; returns the counts."""
    counts: Counter = Counter()
    key: str | None = None
    group: list[tuple[tarfile.TarInfo, bytes]] = []
    try:
        with tarfile.open(src, "r|*") as tin, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as out:
            for info in tin:
                split = split_member(info.name) if info.isfile() else None
                if split is None:
                    continue
                if split[0] != key:
                    _flush(out, key, group, det, id_field, counts)
                    key, group = split[0], []
                group.append((info, tin.extractfile(info).read()))
            _flush(out, key, group, det, id_field, counts)
    except (tarfile.TarError, EOFError) as err:
        raise DataError(f"{src}: not a readable tar shard ({err}); nothing was written for it") from None
    return counts


def attach_vinvl(
    shards: list[Path], features_tsv: Path, labels_tsv: Path, out_dir: Path | None = None,
    id_field: str = "key", roi_dim: int = VINVL_DIM,
) -> dict[str, Any]:  # fmt: skip
    """Add VinVL sidecars to each shard (in place atomically, or into ``out_dir``); returns the counts.

    Writes ``vinvl_attach.json`` (counts per shard and in all) beside the written shards and copies the input's
    ``sizes.json`` when writing elsewhere (sample counts do not change).
    """
    if not shards:
        raise DataError("no shards to attach sidecars to")
    det = Detections(TsvIndex(Path(features_tsv)), TsvIndex(Path(labels_tsv)), roi_dim)
    total: Counter = Counter()
    per_shard = {}
    for src in shards:
        dest = (Path(out_dir) / src.name) if out_dir is not None else src
        dest.parent.mkdir(parents=True, exist_ok=True)
        counts = atomic_write(dest, lambda f, src=src: rewrite_shard(src, f, det, id_field))
        per_shard[src.name] = dict(counts)
        total.update(counts)
        LOG.info("%s: %d of %d samples got sidecars", dest, counts["attached"], counts["samples"])
    folders = {(Path(out_dir) if out_dir is not None else s.parent) for s in shards}
    for folder in folders:
        sizes = shards[0].parent / layout.SIZES_FILE
        if out_dir is not None and sizes.is_file() and not (folder / layout.SIZES_FILE).exists():
            (folder / layout.SIZES_FILE).write_bytes(sizes.read_bytes())
        write_json(folder / REPORT, {"features_tsv": str(features_tsv), "labels_tsv": str(labels_tsv),
                                     "id_field": id_field, "total": dict(total), "shards": per_shard})  # fmt: skip
    return {"total": dict(total), "shards": per_shard}
