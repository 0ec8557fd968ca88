"""CSV image-caption pairs joined with VinVL detector outputs (region features and labels) by image id.

- CSV: a header row with a ``filepath`` column and a ``caption`` (or ``title``/``text``) column, comma or tab
  separated; ``filepath`` relative to ``images_root`` if given, else to the CSV's folder. The image id is the
  file stem, so several captions of one image share its regions.
- Feature TSV (VinVL): ``image_id <TAB> num_boxes <TAB> base64(float32 [num_boxes, D])``; the last 6 of the D
  columns are the box geometry. A ``.lineidx`` file beside it (VinVL ships one: a byte offset per line) avoids
  a full scan when indexing.
- Label TSV (VinVL): ``image_id <TAB> JSON`` where the JSON is a list of ``{"class", "rect", "conf"}`` or a dict
  with that list under ``"objects"``; its order matches the features' rows.

Either TSV may be omitted (``None``): then samples have zero regions / no tags. Rows are random-access, so the
epoch order is a full permutation (no shuffle buffer); a missing image file or detector row is a bad sample.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softclip.data.badsamples import LOGGER, BadRecord, BadSample, DataError
from softclip.data.readers.base import TRAIN_READERS, Preprocess, Sample, SourcePaths, require, rng_for
from softclip.data.readers.decode import check_roi, decode_caption, decode_image, make_sample

CAPTION_KEYS = ("caption", "title", "text")


class TsvIndex:
    """Random access to the rows of a large TSV by their first field (the image id), by byte offset."""

    def __init__(self, path: Path, log=LOGGER) -> None:
        self.path = require(path, "VinVL TSV")
        self.offsets = self._index(log)
        self._fh = None
        self._pid = -1

    def _index(self, log) -> dict[str, int]:
        offsets: dict[str, int] = {}
        lineidx = [p for p in (self.path.with_suffix(".lineidx"), Path(f"{self.path}.lineidx")) if p.exists()]
        with open(self.path, "rb") as f:
            if lineidx:
                for line in lineidx[0].read_text().split():
                    f.seek(int(line))
                    head = f.read(256)
                    offsets[head.split(b"\t", 1)[0].decode()] = int(line)
                return offsets
            log.info("indexing %s (no .lineidx beside it)", self.path)
            pos = 0
            for line in f:
                tab = line.find(b"\t")
                if tab > 0:
                    offsets[line[:tab].decode()] = pos
                pos += len(line)
        return offsets

    def get(self, image_id: str) -> list[str] | None:
        """The tab-split fields of ``image_id``'s row, or None when the TSV has no such row."""
        off = self.offsets.get(image_id)
        if off is None:
            return None
        if self._pid != os.getpid():  # a forked worker must not share the parent's file position
            self._fh, self._pid = open(self.path, "rb"), os.getpid()
        self._fh.seek(off)
        return self._fh.readline().decode().rstrip("\r\n").split("\t")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fh": None, "_pid": -1}


def decode_features(fields: list[str], roi_dim: int) -> np.ndarray:
    """VinVL feature row (id, num_boxes, base64 float32) -> float32 [num_boxes, D]; BadSample if malformed."""
    if len(fields) < 3:
        raise BadSample("bad_roi", f"feature row has {len(fields)} fields, expected 3")
    try:
        num = int(fields[1])
        arr = np.frombuffer(base64.b64decode(fields[2], validate=True), dtype=np.float32)
    except (ValueError, binascii.Error) as err:
        raise BadSample("bad_roi", f"undecodable feature row: {err}") from None
    if num < 0 or (num == 0 and arr.size) or (num > 0 and arr.size % num):
        raise BadSample("bad_roi", f"{arr.size} floats do not split into num_boxes={num} rows")
    return check_roi(arr.reshape(num, -1) if num else arr.reshape(0, roi_dim), roi_dim)


def decode_labels(fields: list[str], k: int) -> list[str]:
    """VinVL label row (id, JSON objects) -> the K class names in row order; BadSample if malformed."""
    try:
        objs = json.loads(fields[1])
        objs = objs.get("objects", []) if isinstance(objs, dict) else objs
        tags = [str(o["class"]) for o in objs]
    except (IndexError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise BadSample("bad_tags", f"malformed label row: {type(err).__name__}: {err}") from None
    if len(tags) != k:
        raise BadSample("sidecar_mismatch", f"{len(tags)} labels for {k} feature rows")
    return tags


def read_pairs(csv_path: Path, images_root: Path | None) -> tuple[list[str], list[str]]:
    """(image paths, captions) of a CSV with a header; DataError naming the file when columns are missing."""
    with open(require(csv_path, "training CSV"), newline="", encoding="utf-8") as f:
        head = f.readline()
        f.seek(0)
        reader = csv.DictReader(f, delimiter="\t" if "\t" in head else ",")
        fields = reader.fieldnames or []
        cap = next((k for k in CAPTION_KEYS if k in fields), None)
        if "filepath" not in fields or cap is None:
            raise DataError(f"{csv_path}: header {fields} needs 'filepath' and one of {list(CAPTION_KEYS)}")
        base = images_root if images_root is not None else csv_path.parent
        rows = [(str(base / r["filepath"]), r[cap] or "") for r in reader]
    if not rows:
        raise DataError(f"training CSV has no rows: {csv_path}")
    return [r[0] for r in rows], [r[1] for r in rows]


@dataclass
class RawPair:
    """One CSV row with its image bytes and detector rows, undecoded."""

    key: str
    source: str
    image: bytes
    caption: str
    features: list[str] | None
    labels: list[str] | None


class CsvSource:
    """CSV pairs + VinVL TSVs as a training source (random access; full permutation per epoch)."""

    sequential = False

    def __init__(
        self, paths: list[str], captions: list[str], features: TsvIndex | None, labels: TsvIndex | None,
        roi_dim: int, name: str,
    ) -> None:
        self.paths, self.captions = paths, captions
        self.features, self.labels = features, labels
        self.roi_dim, self.name = roi_dim, name
        self.num_samples = len(paths)

    def input_stream(
        self, *, seed: int, epoch: int, rank: int, world_size: int, n: int, shuffle: bool, resampled: bool
    ) -> np.ndarray:
        """The rank's ``n`` row indices for ``epoch``, int64 [n]."""
        if resampled:
            return rng_for(seed, epoch, rank, "resample").integers(self.num_samples, size=n)
        order = rng_for(seed, epoch, "rows").permutation(self.num_samples) if shuffle else np.arange(self.num_samples)
        return order[rank * n : (rank + 1) * n]

    def read(self, stream: np.ndarray, wanted: np.ndarray) -> Iterator[tuple[int, RawPair | BadRecord]]:
        """Image bytes and detector rows for each wanted position (a missing image file is a bad record)."""
        for q in wanted:
            row = int(stream[q])
            path = self.paths[row]
            key = Path(path).stem
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                yield int(q), BadRecord("missing_image", key, self.name, f"{path}: {err.strerror or err}")
                continue
            feats = self.features.get(key) if self.features is not None else None
            labels = self.labels.get(key) if self.labels is not None else None
            yield int(q), RawPair(key, self.name, data, self.captions[row], feats, labels)

    def decode(self, raw: RawPair, preprocess: Preprocess) -> Sample:
        """Validate caption and detector rows, decode the image, preprocess. Raises BadSample."""
        caption = decode_caption(raw.caption)
        if self.features is None:
            roi = np.zeros((0, self.roi_dim), np.float32)
        elif raw.features is None:
            raise BadSample("missing_sidecar", f"no row for image id in {self.features.path.name}")
        else:
            roi = decode_features(raw.features, self.roi_dim)
        if self.labels is None:
            tags: list[str] = []
        elif raw.labels is None:
            raise BadSample("missing_sidecar", f"no row for image id in {self.labels.path.name}")
        else:
            tags = decode_labels(raw.labels, len(roi))
        image = decode_image(raw.image)
        return make_sample(image, caption, roi, tags, raw.key, raw.source, preprocess)


@TRAIN_READERS.register("csv")
def open_csv(paths: SourcePaths, *, roi_dim: int, sidecars: bool = True, scenes: bool = False,
             log=LOGGER) -> CsvSource:  # fmt: skip
    """Open ``paths.csv`` with optional ``features_tsv``/``labels_tsv`` (ignored when not ``sidecars``).

    Raises:
        DataError: ``scenes`` asked for (CSV pairs carry no scene annotations).
    """
    if scenes:
        raise DataError("data.source=csv carries no scene annotations (objects and caption mentions), which "
                        "loss.target=oracle needs; use SynthScenes shards")  # fmt: skip
    csv_path = paths.resolve(paths.csv)
    if csv_path is None:
        raise DataError("data.csv: no training CSV given")
    images, captions = read_pairs(csv_path, paths.resolve(paths.images_root))
    feats = TsvIndex(paths.resolve(paths.features_tsv), log) if sidecars and paths.features_tsv else None
    labels = TsvIndex(paths.resolve(paths.labels_tsv), log) if sidecars and paths.labels_tsv else None
    return CsvSource(images, captions, feats, labels, roi_dim, csv_path.name)
