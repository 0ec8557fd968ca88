"""Paper-shaped rehearsal data: the paper's formats and shapes, with cheap synthetic pixels.

``write_paper_shapes(out, PaperShapes(...))`` writes what ``softclip reproduce --profile paper`` reads, in the
real layouts, so a rehearsal run exercises every reader, shape and protocol the paper run will:

- ``train/``: 224-px RGB JPEG shards in img2dataset's webdataset layout (9-digit keys, ``.jpg .txt .json``, a
  ``{shard}_stats.json`` per shard, ``sizes.json``) with VinVL-shaped sidecars: ``.roi.npy`` float16
  [K, 2054] (2,048 features + 6 box-geometry columns x1/W, y1/H, x2/W, y2/H, w/W, h/H), K from 0 to ``kmax``
  (50: VinVL's cap), and ``.tags.json`` ``{"tags", "boxes"}``.
- ``csv/``: the CSV + VinVL TSV variant of the same pairs (``train.csv``; ``features.tsv`` with its
  ``.lineidx``; ``labels.tsv``), images under ``csv/images/``.
- ``imagenet/val/{n%08d}/*.JPEG``: 1,000 class folders (wnid-shaped names whose sorted order is the class
  order of the ``imagenet1k`` names open_clip ships), ``imagenet_per_class`` images each.
- ``flickr30k/dataset_flickr30k.json`` + ``flickr30k-images/``; ``coco/dataset_coco.json`` + ``val2014/``:
  Karpathy splits with 5 captions per image (``retrieval_images`` test images, a few train ones).
- ``revisitop/{roxford5k,rparis6k}/gnd_*.pkl`` + ``jpg/``: 70 queries each with bbx and easy/hard/junk lists.
- ``copydays/original/`` (157 originals), ``strong/`` (one attack each), ``copydays_distractors/``,
  ``copydays_whitening/``.
- ``env.sh``: the seven dataset variables of ``eval/paper.yaml`` pointing here.

Counts kept at the real value: ImageNet's 1,000 classes, 5 captions per image, 70 queries per revisitop set,
157 Copydays originals, K up to 50 regions of 2,054 dims. Reduced (only the count costs time): training pairs,
ImageNet images per class (real 50), retrieval test images (real 1k / 5k), revisitop database (real 4,993 /
6,322), Copydays strong attacks (real 229), distractors (real 10k) and whitening images (real 20k).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
import pickle
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from softclip.atomic import write_bytes, write_json, write_text
from softclip.data.badsamples import DataError

VINVL_FEATURES = 2048
VINVL_GEOMETRY = 6
TAG_WORDS = ("man", "woman", "dog", "car", "tree", "building", "sky", "shirt", "table", "window", "grass", "cup")
REVISITOP = ("roxford5k", "rparis6k")
N_QUERIES = 70
LOG = logging.getLogger("softclip.data")
PAPER_VARS = {"IMAGENET_ROOT": "imagenet", "FLICKR30K_ROOT": "flickr30k", "COCO_ROOT": "coco",
              "REVISITOP_ROOT": "revisitop", "COPYDAYS_ROOT": "copydays",
              "COPYDAYS_DISTRACTORS": "copydays_distractors", "COPYDAYS_WHITENING": "copydays_whitening"}  # fmt: skip


@dataclass(frozen=True)
class PaperShapes:
    """Sizes of the rehearsal data (defaults: the smallest that keeps every real class/query count)."""

    n_train: int = 64
    samples_per_shard: int = 32
    image_size: int = 224
    kmax: int = 50
    imagenet_per_class: int = 1
    retrieval_images: int = 25
    revisitop_db: int = 100
    copydays_originals: int = 157  # real count; smaller only for a quick test
    copydays_distractors: int = 50
    copydays_whitening: int = 50
    eval_size: int = 96  # side of the evaluation images (the preprocess resizes them to the model's size)
    seed: int = 0


def _jpeg(rng: np.random.Generator, size: int | tuple[int, int], quality: int = 90) -> bytes:
    """A random scene: a coloured background and 1-4 filled shapes, as JPEG bytes."""
    w, h = (size, size) if isinstance(size, int) else size
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        box = [x0, y0, int(rng.integers(x0 + 4, w)), int(rng.integers(y0 + 4, h))]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def regions(rng: np.random.Generator, k: int, w: int, h: int) -> tuple[np.ndarray, list[str], list[list[float]]]:
    """VinVL-shaped detections: float16 [K, 2054] (features, then geometry), K tags, K pixel boxes."""
    x1, y1 = rng.uniform(0, w - 2, k), rng.uniform(0, h - 2, k)
    x2, y2 = rng.uniform(x1 + 1, w), rng.uniform(y1 + 1, h)
    geo = np.stack([x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h], axis=1)
    feats = np.abs(rng.standard_normal((k, VINVL_FEATURES))).astype(np.float32)  # VinVL features are >= 0
    roi = np.concatenate([feats, geo.astype(np.float32)], axis=1).astype(np.float16)
    tags = [TAG_WORDS[i] for i in rng.integers(0, len(TAG_WORDS), k)]
    boxes = np.stack([x1, y1, x2, y2], axis=1).round(2).tolist() if k else []
    return roi, tags, boxes


def _caption(rng: np.random.Generator) -> str:
    words = [TAG_WORDS[i] for i in rng.integers(0, len(TAG_WORDS), 3)]
    return f"a {words[0]} and a {words[1]} next to a {words[2]}"


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_train(out: Path, spec: PaperShapes) -> list[dict]:
    """The webdataset shards (and the CSV/TSV variant of the same pairs); returns the per-sample records."""
    rng = np.random.default_rng([spec.seed, 1])
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "csv" / "images").mkdir(parents=True, exist_ok=True)
    records, sizes = [], {}
    n_shards = -(-spec.n_train // spec.samples_per_shard)
    for shard in range(n_shards):
        name = f"{shard:05d}.tar"
        buf = io.BytesIO()
        ids = range(shard * spec.samples_per_shard, min(spec.n_train, (shard + 1) * spec.samples_per_shard))
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for i in ids:
                key = f"{shard:05d}{i % spec.samples_per_shard:04d}"
                s = spec.image_size
                k = spec.kmax if i % 8 == 0 else (0 if i % 8 == 1 else int(rng.integers(1, spec.kmax + 1)))
                image, caption = _jpeg(rng, s), _caption(rng)
                roi, tags, boxes = regions(rng, k, s, s)
                meta = {"url": f"https://example.invalid/{key}.jpg", "key": key, "status": "success",
                        "error_message": None, "width": s, "height": s, "original_width": s, "original_height": s,
                        "exif": "{}", "caption": caption}  # fmt: skip
                npy = io.BytesIO()
                np.save(npy, roi, allow_pickle=False)
                parts = {"jpg": image, "txt": caption.encode(), "json": json.dumps(meta).encode(),
                         "roi.npy": npy.getvalue(), "tags.json": json.dumps({"tags": tags, "boxes": boxes}).encode()}  # fmt: skip
                for ext, data in parts.items():
                    _tar_add(tar, f"{key}.{ext}", data)
                (out / "csv" / "images" / f"{key}.jpg").write_bytes(image)
                records.append({"key": key, "caption": caption, "roi": roi, "tags": tags, "boxes": boxes})
        write_bytes(out / "train" / name, buf.getvalue())
        sizes[name] = len(ids)
        write_json(out / "train" / f"{shard:05d}_stats.json", {"count": len(ids), "successes": len(ids),
                                                               "failed_to_download": 0, "failed_to_resize": 0})  # fmt: skip
    write_json(out / "train" / "sizes.json", sizes)
    write_csv_variant(out / "csv", records)
    return records


def write_csv_variant(folder: Path, records: list[dict]) -> None:
    """``train.csv`` (filepath, caption), VinVL ``features.tsv`` (+ ``.lineidx``) and ``labels.tsv``."""
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        writer.writerows([f"images/{r['key']}.jpg", r["caption"]] for r in records)
    offsets, feat_lines, label_lines, pos = [], [], [], 0
    for r in records:
        roi = r["roi"].astype(np.float32)
        line = f"{r['key']}\t{len(roi)}\t{base64.b64encode(roi.tobytes()).decode()}\n"
        offsets.append(pos)
        pos += len(line.encode())
        feat_lines.append(line)
        objs = [{"class": t, "rect": b, "conf": 0.9} for t, b in zip(r["tags"], r["boxes"], strict=True)]
        label_lines.append(f"{r['key']}\t{json.dumps(objs)}\n")
    write_text(folder / "features.tsv", "".join(feat_lines))
    write_text(folder / "features.lineidx", "".join(f"{o}\n" for o in offsets))
    write_text(folder / "labels.tsv", "".join(label_lines))


def write_imagenet(out: Path, spec: PaperShapes) -> None:
    rng = np.random.default_rng([spec.seed, 2])
    for c in range(1000):
        folder = out / "imagenet" / "val" / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(spec.imagenet_per_class):
            (folder / f"ILSVRC2012_val_{c * spec.imagenet_per_class + j + 1:08d}.JPEG").write_bytes(
                _jpeg(rng, spec.eval_size)
            )


def _karpathy(folder: Path, dataset: str, json_name: str, image_dir: str, prefix: str, spec: PaperShapes,
              seed: int) -> None:  # fmt: skip
    """A Karpathy split JSON: ``retrieval_images`` test images and 3 train ones, 5 captions each."""
    rng = np.random.default_rng([spec.seed, seed])
    (folder / image_dir).mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(spec.retrieval_images + 3):
        name = f"{prefix}{i:012d}.jpg"
        (folder / image_dir / name).write_bytes(_jpeg(rng, (spec.eval_size, spec.eval_size * 3 // 4)))
        sents = [{"raw": _caption(rng), "tokens": [], "imgid": i, "sentid": 5 * i + j} for j in range(5)]
        entry = {"filename": name, "imgid": i, "split": "test" if i < spec.retrieval_images else "train",
                 "sentences": sents, "sentids": [5 * i + j for j in range(5)]}  # fmt: skip
        if dataset == "coco":
            entry["filepath"] = image_dir
        images.append(entry)
    write_json(folder / json_name, {"dataset": dataset, "images": images})


def write_revisitop(out: Path, spec: PaperShapes) -> None:
    """gnd pickles with 70 queries (bbx, easy/hard/junk over the database) and their images."""
    for n, name in enumerate(REVISITOP):
        rng = np.random.default_rng([spec.seed, 10 + n])
        folder = out / "revisitop" / name
        (folder / "jpg").mkdir(parents=True, exist_ok=True)
        imlist = [f"{name}_db_{i:05d}" for i in range(spec.revisitop_db)]
        qimlist = [f"{name}_q_{i:02d}" for i in range(N_QUERIES)]
        for im in imlist + qimlist:
            (folder / "jpg" / f"{im}.jpg").write_bytes(_jpeg(rng, spec.eval_size))
        gnd = []
        for _ in range(N_QUERIES):
            pick = rng.permutation(spec.revisitop_db)
            half = spec.eval_size // 2
            gnd.append({"bbx": [4.0, 4.0, float(half), float(half)], "easy": np.sort(pick[:2]),
                        "hard": np.sort(pick[2:4]), "junk": np.sort(pick[4:5])})  # fmt: skip
        write_bytes(folder / f"gnd_{name}.pkl", pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}))


def write_copydays(out: Path, spec: PaperShapes) -> None:
    """157 originals, one strong attack each (a re-encoded crop), distractors and a whitening set."""
    rng = np.random.default_rng([spec.seed, 20])
    for sub in ("original", "strong"):
        (out / "copydays" / sub).mkdir(parents=True, exist_ok=True)
    for b in range(spec.copydays_originals):
        data = _jpeg(rng, spec.eval_size)
        (out / "copydays" / "original" / f"{200000 + b * 100:06d}.jpg").write_bytes(data)
        img = Image.open(io.BytesIO(data)).crop((8, 8, spec.eval_size - 8, spec.eval_size - 8))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=30)
        (out / "copydays" / "strong" / f"{200000 + b * 100 + 1:06d}.jpg").write_bytes(buf.getvalue())
    for name, n in (("copydays_distractors", spec.copydays_distractors), ("copydays_whitening", spec.copydays_whitening)):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (out / name / f"{i:06d}.jpg").write_bytes(_jpeg(rng, spec.eval_size))


def write_paper_shapes(out: str | Path, spec: PaperShapes | None = None) -> dict:
    """Write every set under ``out``; returns the card (also ``out/card.json``); ``out/env.sh`` exports the
    dataset variables."""
    spec = spec or PaperShapes()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_train(out, spec)
    write_imagenet(out, spec)
    _karpathy(out / "flickr30k", "flickr30k", "dataset_flickr30k.json", "flickr30k-images", "", spec, 3)
    _karpathy(out / "coco", "coco", "dataset_coco.json", "val2014", "COCO_val2014_", spec, 4)
    write_revisitop(out, spec)
    write_copydays(out, spec)
    env = {var: str(out / sub) for var, sub in PAPER_VARS.items()}
    write_text(out / "env.sh", "".join(f"export {k}={v}\n" for k, v in env.items()))
    card = {"kind": "paper_shapes", "spec": asdict(spec), "env": env}
    write_json(out / "card.json", card)
    return card


def ensure_rehearsal_data(roots: Iterable[str | Path], spec: PaperShapes | None = None) -> dict[str, str]:
    """Make the rehearsal's data ready: paper-shaped sets written under each root that lacks them (a root with
    ``card.json`` is used as it is), and eval/paper.yaml's seven variables pointed at the first root's sets in
    ``os.environ`` (so the runs started from here, local processes or SLURM jobs, score those sets; a variable
    that pointed elsewhere is replaced, with a log line: the rehearsal is defined on its own data).

    Raises:
        DataError: a root holds files but no ``card.json`` (data of something else: never written over).
    """
    env: dict[str, str] = {}
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        card = root / "card.json"
        if not card.is_file():
            if root.is_dir() and any(root.iterdir()):
                raise DataError(f"{root} holds files but no card.json, so it is not rehearsal data; remove it or "
                                f"point data.root elsewhere (`softclip data paper --out DIR` writes it)")  # fmt: skip
            LOG.info("writing paper-shaped rehearsal data to %s", root)
            write_paper_shapes(root, spec)
        env = env or {var: str(root / sub) for var, sub in PAPER_VARS.items()}
    for var, value in env.items():
        if os.environ.get(var) not in (None, value):
            LOG.warning("rehearsal: %s=%s replaced by the rehearsal's %s", var, os.environ[var], value)
        os.environ[var] = value
    return env
