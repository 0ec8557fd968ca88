"""Loader throughput per worker process: our training loader against open_clip_train's webdataset pipeline.

Both read the same paper-shaped shards (``softclip.data.synth.paper_shapes``: 224-px JPEGs in img2dataset's
layout with VinVL-shaped sidecars, float16 K <= 50 x 2054) with the same transform (open_clip's RN50
``preprocess_train``: RandomResizedCrop 224, scale 0.9-1, ToTensor, Normalize), the same tokenizer, batch and
worker count, one full pass each, in turns (ours, theirs, ours, theirs, ...) so that a noisy neighbour hits both.

Per worker process: ``samples / worker CPU-seconds`` (the workers' user+system time, from ``RUSAGE_CHILDREN``
after the loader joined them), which does not depend on how busy the machine's other cores are, and the wall
rate divided by the worker count. Contenders:

- ``softclip``: ``build_train_loader`` with sidecars (what the paper run reads: image, caption, ROI, tags);
- ``softclip_nosidecar``: the same without sidecars (the same work as open_clip's pipeline);
- ``open_clip``: ``open_clip_train.data.get_wds_dataset`` (image + caption only; no exact resume);
- ``draft``: per image, JPEG decode + transform with and without Pillow's ``draft()`` (DCT-domain downscale by
  1/2, 1/4 or 1/8 before the crop, to no less than the transform's 224 px) on images stored at 224 px (the
  rehearsal shards: draft cannot reduce them) and at ``--draft-size`` px (img2dataset's larger settings).

Workers needed to feed a GPU = its samples/s (reports/perf/gpu.md) / per-worker samples per second.

    python benchmarks/loader.py [--n 384] [--workers 2] [--repeats 2] [--out reports/perf]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from softclip.report.hardware import this_machine  # noqa: E402

GPU_RATES = {  # reports/perf/gpu.md, ViT-B-32 224 px batch 256 bf16 on one H200 (synthetic batches on the GPU)
    "open_clip_train ViT-B-32 b256": 2355.0,
    "softclip paper config ViT-B-32 b256": 1923.8,
}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def make_shards(folder: Path, n: int, size: int, per_shard: int) -> Path:
    from softclip.data.synth.paper_shapes import PaperShapes, write_train

    write_train(folder, PaperShapes(n_train=n, samples_per_shard=per_shard, image_size=size))
    return folder / "train"


def ours(train: Path, n: int, workers: int, batch: int, preprocess, tokenizer, sidecars: bool):
    from softclip.config import DataConfig
    from softclip.data.loader import build_train_loader

    cfg = DataConfig(source="wds", root=str(train.parent), train=str(train), batch_size=batch, workers=workers,
                     kmax=50, sidecars=sidecars)  # fmt: skip
    loader = build_train_loader(cfg, preprocess=preprocess, tokenizer=tokenizer, batch_size=batch, roi_dim=2054,
                                seed=0, sidecars=sidecars)  # fmt: skip
    return sum(len(b["image"]) for b in loader)


def webdataset_compat() -> None:
    """open_clip_train 3.3's ``group_by_keys_nothrow`` reads ``sample["fname"]`` of every item, but webdataset
    >= 0.2.90's ``tar_file_expander`` ends each shard with an empty dict (``eof_value={}``): KeyError 'fname' in
    every worker. Have the expander that open_clip_train imported yield no end-of-shard marker (as before)."""
    import functools

    import open_clip_train.data as ocd
    from webdataset.tariterators import tar_file_expander

    ocd.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


def open_clip_pipeline(train: Path, n: int, workers: int, batch: int, preprocess, tokenizer):
    from open_clip_train.data import get_wds_dataset

    webdataset_compat()
    shards = sorted(train.glob("*.tar"))
    spec = str(train / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar")
    args = SimpleNamespace(train_data=spec, val_data=None, train_num_samples=n, dataset_resampled=False, seed=0,
                           batch_size=batch, workers=workers, world_size=1, train_data_upsampling_factors=None)  # fmt: skip
    info = get_wds_dataset(args, preprocess, True, epoch=0, tokenizer=tokenizer)
    return sum(len(images) for images, _ in info.dataloader)


def timed(fn, *args) -> dict:
    cpu0, t0 = _children_cpu(), time.perf_counter()
    samples = fn(*args)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    return {"samples": samples, "wall_s": round(wall, 3), "worker_cpu_s": round(cpu, 3)}


def summarise(runs: list[dict], workers: int) -> dict:
    samples = sum(r["samples"] for r in runs)
    cpu = sum(r["worker_cpu_s"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    per_cpu = samples / cpu if cpu else float("nan")
    return {"runs": runs, "samples_per_worker_cpu_s": round(per_cpu, 1),
            "wall_samples_per_s_per_worker": round(samples / wall / workers, 1),
            "workers_to_feed": {k: round(v / per_cpu, 1) for k, v in GPU_RATES.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=384, help="samples in the shards")
    p.add_argument("--per-shard", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--draft-size", type=int, default=448)
    p.add_argument("--out", default=None, help="write loader.json and loader.md here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from softclip.config import ModelConfig
    from softclip.models import build_model

    _, preprocess, _, tokenizer = build_model(ModelConfig(name="RN50"))
    with tempfile.TemporaryDirectory() as tmp:
        train = make_shards(Path(tmp) / "s224", args.n, 224, args.per_shard)
        contenders = {
            "softclip": lambda: timed(ours, train, args.n, args.workers, args.batch, preprocess, tokenizer, True),
            "softclip_nosidecar": lambda: timed(ours, train, args.n, args.workers, args.batch, preprocess, tokenizer,
                                                False),  # fmt: skip
            "open_clip": lambda: timed(open_clip_pipeline, train, args.n, args.workers, args.batch, preprocess,
                                       tokenizer),  # fmt: skip
        }
        runs: dict[str, list[dict]] = {k: [] for k in contenders}
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                runs[name].append(fn())
                print(name, runs[name][-1], flush=True)
    results = {name: summarise(r, args.workers) for name, r in runs.items()}
    draft = {size: draft_decode(size, preprocess) for size in (224, args.draft_size)}
    ratio = results["softclip"]["samples_per_worker_cpu_s"] / results["open_clip"]["samples_per_worker_cpu_s"]
    ratio_same = (results["softclip_nosidecar"]["samples_per_worker_cpu_s"]
                  / results["open_clip"]["samples_per_worker_cpu_s"])  # fmt: skip
    report = {
        "host": {"cpu": this_machine()["cpu"], "cores": __import__("os").cpu_count(), "python": platform.python_version(),
                 "torch": torch.__version__, "pillow": __import__("PIL").__version__},
        "settings": vars(args), "results": results, "draft_ms_per_image": draft,
        "ratio_softclip_vs_open_clip_per_worker": round(ratio, 3),
        "ratio_softclip_nosidecar_vs_open_clip_per_worker": round(ratio_same, 3),
    }  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    for name, r in results.items():
        print(f"{name}: {r['samples_per_worker_cpu_s']} samples per worker CPU-s, "
              f"{r['wall_samples_per_s_per_worker']} wall samples/s per worker")  # fmt: skip
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "loader.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def draft_decode(size: int, preprocess, n: int = 48) -> dict:
    """CPU ms per image of decode + transform, full decode vs ``draft`` (to >= 224 px), on ``size``-px JPEGs."""
    import io

    import numpy as np
    from PIL import Image

    from softclip.data.synth.paper_shapes import _jpeg

    rng = np.random.default_rng(0)
    blobs = [_jpeg(rng, size) for _ in range(n)]

    def full(b: bytes):
        with Image.open(io.BytesIO(b)) as img:
            return preprocess(img.convert("RGB"))

    def drafted(b: bytes):
        with Image.open(io.BytesIO(b)) as img:
            img.draft("RGB", (224, 224))  # largest 1/2^k reduction keeping both sides >= 224
            return preprocess(img.convert("RGB"))

    out = {}
    for name, fn in (("full", full), ("draft", drafted)):
        t0 = time.process_time()
        for b in blobs:
            fn(b)
        out[name] = round(1000 * (time.process_time() - t0) / n, 3)
    out["speedup"] = round(out["full"] / out["draft"], 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
