"""Training-data throughput: decoded + preprocessed + collated samples per second, per worker count.

Runs the real training loader (``softclip.data.loader.build_train_loader``, source ``wds``) over SynthScenes
shards (the ``quick`` preset at 64 px, ``n_train`` shrunk; fixture shards if the generator is unavailable)
with open_clip's training transform and tokenizer, and times full epochs. Also times the first batch of a
resumed epoch (``start_batch`` near the end) against a fresh one, showing that skipped samples are not read.

    python benchmarks/data_throughput.py [--n-train 2000] [--workers 0 2] [--out reports/perf]

Writes ``data.json`` (results are data) and ``data.md`` under ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import time
from pathlib import Path

import torch

from softclip.config import DataConfig
from softclip.data.loader import build_train_loader

IMAGE_SIZE = 64
ROOT = Path(__file__).resolve().parents[1]


def make_shards(out: Path, n_train: int, seed: int = 0) -> tuple[Path, int, str]:
    """(dataset root, roi_dim, how it was made): SynthScenes when available, else plain fixture shards."""
    try:
        from softclip.data.synth import SynthConfig, generate
    except ImportError:
        return _fixture_shards(out, n_train), 128, "fixture shards (synth generator not importable)"
    tiny_eval = dict(
        n_zeroshot_per_class=1, n_retrieval_images=1, n_landmarks=1, n_easy_views=1, n_hard_views=0,
        n_junk_views=0, n_instance_distractors=0, n_copydays_originals=1, n_copydays_strong=1,
        copydays_jpeg_qualities=(50,), copydays_crop_pcts=(50,), n_copydays_distractors=0, n_whitening=0,
    )
    spec = SynthConfig.preset("quick", n_train=n_train, image_size=IMAGE_SIZE, samples_per_shard=500, **tiny_eval)
    generate(out, spec, seed=seed, workers=min(4, os.cpu_count() or 1))
    return out, spec.detector.roi_dim, f"SynthScenes quick preset, n_train={n_train}, seed={seed}"


def _fixture_shards(out: Path, n_train: int) -> Path:
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for s, start in enumerate(range(0, n_train, 500)):
        name = f"{s:05d}.tar"
        with tarfile.open(train / name, "w") as tar:
            for i in range(start, min(start + 500, n_train)):
                img, roi = io.BytesIO(), io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)).save(img, "JPEG")
                k = int(rng.integers(0, 6))
                np.save(roi, rng.standard_normal((k, 128)).astype(np.float16))
                tags = json.dumps({"tags": ["red circle"] * k, "boxes": [[0, 0, 8, 8]] * k}).encode()
                for ext, data in (("jpg", img.getvalue()), ("txt", b"a red circle"), ("roi.npy", roi.getvalue()),
                                  ("tags.json", tags)):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        sizes[name] = min(start + 500, n_train) - start
    (train / "sizes.json").write_text(json.dumps(sizes))
    return out


def time_epoch(root: Path, roi_dim: int, workers: int, batch_size: int, epochs: int) -> dict:
    """Samples/s over ``epochs`` full epochs (worker start-up included, as the trainer pays it each epoch)."""
    import open_clip
    from open_clip.transform import image_transform

    loader = build_train_loader(
        DataConfig(source="wds", root=str(root), kmax=16, workers=workers, shuffle_buffer=1000),
        preprocess=image_transform(IMAGE_SIZE, is_train=True), tokenizer=open_clip.get_tokenizer("ViT-B-32"),
        batch_size=batch_size, roi_dim=roi_dim, seed=0,
    )
    rates, first_batch, cpu_ms = [], [], []
    for _ in range(epochs):
        cpu0 = _cpu_seconds()
        start, n, first = time.perf_counter(), 0, None
        for batch in loader:
            first = first if first is not None else time.perf_counter() - start
            n += len(batch["key"])
        rates.append(n / (time.perf_counter() - start))
        first_batch.append(first)
        cpu_ms.append(1e3 * (_cpu_seconds() - cpu0) / n)
    return {
        "workers": workers, "samples_per_s": max(rates), "samples_per_s_epochs": rates,
        "cpu_ms_per_sample": min(cpu_ms), "first_batch_s": min(first_batch),
        "samples_per_epoch": loader.samples_per_epoch, "bad": loader.bad.total,
    }


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the DataLoader workers, joined each epoch)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_resume(root: Path, roi_dim: int, batch_size: int) -> dict:
    """Seconds to the first batch at start_batch=0 vs the last batch (the skip reads headers only)."""
    out = {}
    for label in ("fresh", "resumed"):
        probe = build_train_loader(
            "wds", root=str(root), preprocess=lambda im: torch.zeros(3, 1, 1), tokenizer=lambda t: torch.zeros(
                len(t), 1, dtype=torch.long), batch_size=batch_size, kmax=16, roi_dim=roi_dim, seed=0,
        )
        start_batch = probe.batches_per_epoch - 1 if label == "resumed" else 0
        probe.set_epoch(0, start_batch)
        t0 = time.perf_counter()
        next(iter(probe))
        out[f"{label}_first_batch_s"] = time.perf_counter() - t0
        out[f"{label}_start_batch"] = start_batch
    return out


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Training-data throughput",
        "",
        f"Generated by `python benchmarks/data_throughput.py` on {result['host']['cpus']} CPUs "
        f"({result['host']['platform']}, torch {result['host']['torch']}).",
        f"Data: {result['data']}; {result['image_size']} px, batch {result['batch_size']}, open_clip train "
        "transform and tokenizer; decode + preprocess + collate, full epochs including worker start-up.",
        "",
        f"Load average during the run: {result['host']['loadavg_before']} before, {result['host']['loadavg_after']} "
        "after; on a shared machine wall-clock rates understate the loader, CPU ms per sample does not.",
        "",
        "| workers | samples/s | CPU ms / sample | first batch (s) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['workers']} | {r['samples_per_s']:.0f} | {r['cpu_ms_per_sample']:.2f} | {r['first_batch_s']:.2f} |"
        for r in result["runs"]
    ]
    res = result["resume"]
    lines += [
        "",
        f"Resume: first batch at start_batch={res['resumed_start_batch']} took {res['resumed_first_batch_s']:.3f} s "
        f"vs {res['fresh_first_batch_s']:.3f} s from the start (skipped samples are not read or decoded).",
        "",
    ]
    (out / "data.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per worker count (best is reported)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench" / "data_throughput")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root, roi_dim, how = make_shards(args.data, args.n_train)
    torch.set_num_threads(1)  # a data worker's budget; the trainer owns the other cores
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = [time_epoch(root, roi_dim, w, args.batch_size, args.epochs) for w in args.workers]
    result = {
        "benchmark": "data_throughput", "data": how, "image_size": IMAGE_SIZE, "batch_size": args.batch_size,
        "roi_dim": roi_dim, "runs": runs, "resume": time_resume(root, roi_dim, args.batch_size),
        "host": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_report(result, args.out)
    for r in runs:
        print(f"workers={r['workers']}: {r['samples_per_s']:.0f} samples/s, {r['cpu_ms_per_sample']:.2f} CPU ms/sample "
              f"(first batch {r['first_batch_s']:.2f} s)")
    print(f"load average before/after: {load_before} / {result['host']['loadavg_after']}")
    print(f"resume: {result['resume']}")
    return result


if __name__ == "__main__":
    main()
