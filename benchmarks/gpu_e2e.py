"""The GPU check end to end (issue 32, item 7): our trainer vs open_clip_train, each with its own loader, on the
same paper-shaped shards on the machine's local disk, with its CPU cores as loader workers.

For each cell (model RN50 / ViT-B-32, global batch 256 / 512 / 1024, torch.compile off / on), in priority order
until ``--budget-s`` is spent:

- ours: ``softclip train ablations/base.yaml --profile rehearsal`` with the cell's model/batch/compile, bf16,
  ``data.workers=W``, resampled shards, no evaluation; samples/s and the data-wait fraction (``data_time_s`` /
  step time) from ``metrics.jsonl``, the first log interval (warm-up, compilation) left out;
- open_clip_train: ``open_clip_train.main`` (its webdataset pipeline, ``--dataset-resampled``, amp_bf16,
  ``--torchcompile`` when on); samples/s and ``Data (t) / Batch (t)`` from its log, the first interval left out.

MFU = samples/s x training FLOPs per sample (FlopCounterMode, one fwd+bwd of the open_clip model) / 989 TFLOP/s
(H100 SXM dense bf16). Also the paper suite's image-embedding rate: the harness's ``Embedder`` over the
paper-shaped ImageNet folder (1,000 images at 500 x 375) with the suite's 8 workers.

    python benchmarks/gpu_e2e.py [--out DIR] [--budget-s 420]     # on the GPU machine, e.g. after
        bash benchmarks/gpu_check.sh's wheel install: PYTHONPATH=/tmp/site python3 benchmarks/gpu_e2e.py --out $OUT
    python benchmarks/gpu_e2e.py --dry-run [--out DIR]            # CPU, tiny models, a few steps: the plumbing

Writes ``gpu_e2e.json`` and ``gpu_e2e.md`` under ``--out`` (default $OUT, else /tmp/gpu_e2e).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PEAK_BF16 = 989e12  # H100 SXM dense bf16 FLOP/s
OPEN_CLIP_LINE = re.compile(r"Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+), ([\d.]+)/s")


def _env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (wheels unpacked elsewhere stay on it)."""
    rest = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + rest if rest else "")}


def plan(dry: bool) -> list[dict]:
    """Cells in priority order (the budget may end the list early)."""
    if dry:
        return [{"model": m, "batch": 8, "compile": False} for m in ("tiny-rn", "tiny-vit")]
    cells = []
    for batch, comp in ((512, False), (512, True), (1024, False), (256, False), (1024, True), (256, True)):
        for model in ("ViT-B-32", "RN50"):
            cells.append({"model": model, "batch": batch, "compile": comp})
    return cells


def ours(cell: dict, data: Path, work: Path, steps: int, workers: int, dry: bool) -> dict:
    run = work / f"ours_{cell['model']}_{cell['batch']}_{int(cell['compile'])}"
    overrides = [f"model.name={cell['model']}", f"data.root={data}", f"data.batch_size={cell['batch']}",
                 f"data.workers={workers}", f"train.steps={steps}", f"train.ckpt_every={steps}", "train.eval_every=0",
                 f"train.log_every={max(1, steps // 3)}", f"train.compile={str(cell['compile']).lower()}",
                 f"train.precision={'fp32' if dry else 'bf16'}", f"data.epoch_samples={cell['batch'] * steps}"]  # fmt: skip
    cmd = [sys.executable, "-m", "softclip.cli", "train", str(ROOT / "ablations" / "base.yaml"), "--profile",
           "rehearsal", "--run-dir", str(run), "--overwrite", "--no-eval", *overrides]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    out = {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode:
        return {**out, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"samples_per_s"' in x]
    rows = rows[1:] or rows  # the first interval holds warm-up and compilation
    rate = sum(r["samples_per_s"] for r in rows) / len(rows)
    step_s = cell["batch"] / rate
    data = sum(r.get("data_time_s", 0.0) for r in rows) / len(rows)
    return {**out, "samples_per_s": round(rate, 1), "data_wait_fraction": round(data / step_s, 3)}


def open_clip(cell: dict, shards: str, n: int, work: Path, steps: int, workers: int, dry: bool) -> dict:
    logs = work / "open_clip_logs"
    name = f"oc_{cell['model']}_{cell['batch']}_{int(cell['compile'])}"
    argv = ["--train-data", shards, "--dataset-type", "webdataset", "--dataset-resampled",
            "--train-num-samples", str(cell["batch"] * steps), "--batch-size", str(cell["batch"]),
            "--workers", str(workers), "--precision", "fp32" if dry else "amp_bf16", "--model", cell["model"],
            "--epochs", "1", "--lr", "1e-3", "--warmup", "1", "--log-every-n-steps", str(max(1, steps // 3)),
            "--logs", str(logs), "--name", name, "--report-to", "", "--save-frequency", "0", "--seed", "0"]  # fmt: skip
    if cell["compile"]:
        argv.append("--torchcompile")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--open-clip-main", "--", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    out = {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    log = logs / name / "out.log"
    text = (log.read_text() if log.is_file() else "") + proc.stdout + proc.stderr
    found = [tuple(map(float, m)) for m in OPEN_CLIP_LINE.findall(text)]
    if proc.returncode or not found:
        return {**out, "error": (proc.stderr.strip().splitlines() or ["no progress lines"])[-1:]}
    found = found[1:] or found
    data, batch_t = found[-1][0], found[-1][1]  # open_clip_train prints running averages
    rate = sum(f[2] for f in found) / len(found)
    return {**out, "samples_per_s": round(rate, 1), "data_wait_fraction": round(data / batch_t, 3)}


def run_open_clip_main(argv: list[str]) -> int:
    """open_clip_train.main with the webdataset end-of-shard fix (see benchmarks/loader.py)."""
    import softclip.models  # noqa: F401 - registers the tiny presets (dry run)
    from benchmarks.loader import webdataset_compat

    webdataset_compat()
    from open_clip_train.main import main

    main(argv)
    return 0


def train_flops(model: str) -> float | None:
    import torch

    from benchmarks.gpu_bench import counted_flops

    try:
        return counted_flops(model, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    except Exception:  # noqa: BLE001 - a FLOP count is a report detail
        return None


def embedding_rate(model: str, folder: Path, workers: int, dry: bool) -> dict:
    """Images/s of the harness's Embedder over the paper-shaped ImageNet folder."""
    import torch

    from softclip.config import ModelConfig
    from softclip.data.readers import EVAL_READERS
    from softclip.evaluation.embed import Embedder
    from softclip.models import build_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net, _, preprocess, tokenizer = build_model(ModelConfig(name=model))
    net = net.to(device).eval()
    paths = EVAL_READERS.get("imagefolder")(folder, split="val").paths[: 64 if dry else None]
    emb = Embedder(preprocess, tokenizer, device=device, batch_size=256, workers=workers)
    t0 = time.perf_counter()
    emb.images(net, paths, source=str(folder))
    dt = time.perf_counter() - t0
    return {"model": model, "workers": workers, "images": len(paths), "seconds": round(dt, 2), "images_per_s": round(len(paths) / dt, 1)}


def write_md(report: dict, path: Path) -> None:
    lines = ["# GPU check end to end: our trainer vs open_clip_train, each with its own loader", "",
             f"{report['device']}; {report['cpus']} CPUs, loader workers {report['workers']}; "
             f"{report['steps']} steps per cell; {report['seconds']:.0f} s.", "",
             "| model | batch | compile | ours samples/s | ours data wait | ours MFU | open_clip_train samples/s | "
             "its data wait | its MFU | ours / theirs |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in report["cells"]:
        o, t = c.get("ours", {}), c.get("open_clip", {})
        ratio = (o["samples_per_s"] / t["samples_per_s"]) if "samples_per_s" in o and "samples_per_s" in t else None
        lines.append(f"| {c['model']} | {c['batch']} | {c['compile']} | {o.get('samples_per_s', o.get('error'))} | "
                     f"{o.get('data_wait_fraction', '')} | {o.get('mfu', '')} | "
                     f"{t.get('samples_per_s', t.get('error'))} | {t.get('data_wait_fraction', '')} | "
                     f"{t.get('mfu', '')} | {f'{ratio:.2f}' if ratio else ''} |")  # fmt: skip
    lines += ["", f"Skipped for the time budget: {report['skipped'] or 'none'}", "",
              f"Embedding rate (the paper suite's Embedder): {report['embedding']}"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--open-clip-main"]:
        return run_open_clip_main(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models, a few steps")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_e2e"))
    p.add_argument("--data", default=None, help="shard folder (default: generated under /tmp)")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting cells after this many seconds")
    p.add_argument("--steps", type=int, default=None, help="steps per cell (default 30; dry run 3)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: CPUs - 2)")
    args = p.parse_args(argv)
    import torch

    from softclip.data.synth.paper_shapes import PaperShapes, write_imagenet, write_train

    dry = args.dry_run or not torch.cuda.is_available()
    steps = args.steps or (3 if dry else 30)
    workers = args.workers if args.workers is not None else (1 if dry else max(1, (os.cpu_count() or 4) - 2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data or "/tmp/gpu_e2e_data")
    spec = PaperShapes(n_train=64 if dry else 4096, samples_per_shard=16 if dry else 256, eval_size=500)
    t0 = time.perf_counter()
    if not (data / "train" / "sizes.json").is_file():
        write_train(data, spec)
    if not (data / "imagenet").is_dir():
        write_imagenet(data, PaperShapes(eval_size=64 if dry else 500))
    shards = sorted((data / "train").glob("*.tar"))
    pattern = str(data / "train" / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar")
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {len(shards)} shards", flush=True)
    cells, skipped, flops = [], [], {}
    for cell in plan(dry):
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append(f"{cell['model']} b{cell['batch']} compile={cell['compile']}")
            continue
        if cell["model"] not in flops:
            flops[cell["model"]] = train_flops(cell["model"])
        row = dict(cell)
        row["ours"] = ours(cell, data, out / "work", steps, workers, dry)
        row["open_clip"] = open_clip(cell, pattern, spec.n_train, out / "work", steps, workers, dry)
        for side in ("ours", "open_clip"):
            rate, f = row[side].get("samples_per_s"), flops.get(cell["model"])
            if rate and f and not dry:
                row[side]["mfu"] = round(rate * f / PEAK_BF16, 3)
        print(json.dumps(row), flush=True)
        cells.append(row)
    embed = embedding_rate("tiny-rn" if dry else "RN50", data / "imagenet", 1 if dry else 8, dry)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (dry run)"
    report = {"device": device, "cpus": os.cpu_count(), "workers": workers, "steps": steps, "dry_run": dry,
              "train_flops_per_sample": flops, "cells": cells, "skipped": skipped, "embedding": embed,
              "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    (out / "gpu_e2e.json").write_text(json.dumps(report, indent=1) + "\n")
    write_md(report, out / "gpu_e2e.md")
    print((out / "gpu_e2e.md").read_text())
    failed = [c for c in cells if c["ours"].get("rc") or c["open_clip"].get("rc")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
