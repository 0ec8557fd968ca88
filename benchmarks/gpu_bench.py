"""GPU benchmark: the objective at a paper-sized global batch, and trainer throughput against open_clip_train.

1. Objective, one rank's block of a global batch simulated on one GPU: local rows x global columns (4,096 x 32,768,
   d = 1,024, as rank 3 of 8 at a global batch of 32,768). A fake world size is not possible for
   ``SoftCLIPObjective`` in one process, so the per-direction function is timed: ``losses.direction_terms`` (fused)
   vs ``reference.direction_terms`` on the logits block ``s * U V_g^T`` with the selfsim target of
   ``targets.build_targets`` (side features of dim 256, beta 0.3, tau 0.07, symkl, relation-enhanced term on),
   forward + backward through the logits product. The fp32 logits product alone (forward + backward) is a row of its
   own, and the fused path once more with TF32 allowed. Besides, the whole single-process objective at N = 16,384
   (fused, reference, open_clip's ClipLoss). Times: CUDA events, warm-up, then the median of >= 5 calls; peak memory:
   ``torch.cuda.max_memory_allocated`` during one call above what was allocated before it.
2. Throughput on ViT-B-32 at 224 px, global batch 256, bf16 autocast (fp32 weights), synthetic batches resident on the
   GPU (no data loading: both trainers see the same in-memory tensors; texts fill the 77-token context, so our
   padding trim does not shorten them): open_clip_train's own ``train_one_epoch`` (its ClipLoss, AdamW with main.py's
   parameter groups, cosine schedule, grad clipping 1.0, logit-scale clamp) vs our ``Trainer``'s training step
   (``softclip.train.loop.Trainer._train_step``: seeding, schedule, ``forward_backward`` of our ``StepModel``,
   clipping, finiteness check, fused AdamW) with the CLIP objective, the SoftCLIP objective (image/text sources) and
   the paper configuration (ROI aggregate of 8 random 2,054-d regions, tags through the text tower). Runs alternate,
   repeated; medians. MFU = samples/s x training FLOPs per sample / peak, with training FLOPs = 3 x forward
   (backward = 2 x forward) and forward FLOPs = 2 x multiply-accumulates counted from the model config:
   vision  P*3*p^2*w + L_v*[T*(4 w^2 + 2 r w^2) + 2 T^2 w] + w*E  (P patches, T = P + 1 tokens, r = MLP ratio),
   text    L_t*[C*(4 w_t^2 + 2 r w_t^2) + 2 C^2 w_t] + w_t*E       (C = 77 tokens),
   i.e. 4.41 + 2.98 GMAC (the "4.4 + 2.9 GFLOPs" usually quoted are multiply-accumulates), 44.3 GFLOP per trained
   sample; ``torch.utils.flop_counter`` counts one step as a cross-check. Peaks: the H200's dense bf16 spec
   (989 TFLOP/s) and a measured 8192^3 bf16 matmul on this GPU.

    python benchmarks/gpu_bench.py [--out DIR] [--dry-run]

``--dry-run`` (also SOFTCLIP_GPU_DRY_RUN=1, and the fallback without CUDA) runs everything on the CPU at tiny sizes
(tiny-vit-32 at 32 px, batch 16) and says so. Writes ``DIR/gpu_bench.json`` and appends tables to ``DIR/gpu.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = ROOT / "ablations" / "base.yaml"
H200_BF16_DENSE = 989e12
SIDE_DIM = 256
FULL = {"block": (4096, 32768, 1024), "objective_n": 16384, "model": "ViT-B-32", "batch": 256,
        "warmup": 5, "steps": 20, "repeats": 3, "timing_repeats": 7}  # fmt: skip
DRY = {"block": (128, 512, 64), "objective_n": 256, "model": "tiny-vit-32", "batch": 16,
       "warmup": 1, "steps": 3, "repeats": 1, "timing_repeats": 5}  # fmt: skip
CLIP_LOSS = ["loss.target=hard", "loss.soft_weight=0", "loss.re_weight=0", "loss.image_source=image",
             "loss.text_source=text"]  # fmt: skip
VARIANTS = {  # our trainer: name -> config overrides
    "softclip_clip": CLIP_LOSS,
    "softclip_objective": ["loss.image_source=image", "loss.text_source=text"],
    "softclip_paper": ["data.roi_dim=2054", "data.kmax=8"],
}


# ----------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls after ``warmup`` calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
    return out


def peak_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak MiB allocated during one call above what was allocated before it (None on the CPU)."""
    if device.type != "cuda":
        fn()
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def stats(times: list[float]) -> dict[str, Any]:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "n": len(times), "all_ms": [round(t, 3) for t in times]}  # fmt: skip


def guarded(name: str, fn: Callable[[], dict]) -> dict:
    """``fn()``, or an error record (out of memory, a failing contender) so the other rows still run."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - a benchmark row reports its failure and the rest go on
        print(f"{name}: {type(err).__name__}: {err}", flush=True)
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ 1. the objective


def objective_block(n_l: int, n_g: int, d: int, device: torch.device, repeats: int) -> dict:
    """One direction's terms on a rank's [n_l, n_g] block: fused vs reference, forward + backward."""
    from softclip.objective import losses, reference
    from softclip.objective.losses import off_diagonal_mass
    from softclip.objective.reference import DirectionSpec
    from softclip.objective.targets import SideView, build_targets

    g = torch.Generator(device=device).manual_seed(0)
    world = n_g // n_l
    rank = min(3, world - 1)
    offset = rank * n_l
    u = F.normalize(torch.randn(n_l, d, device=device, generator=g), dim=1).requires_grad_()
    v_g = F.normalize(torch.randn(n_g, d, device=device, generator=g), dim=1).requires_grad_()
    s = torch.tensor(1 / 0.07, device=device, requires_grad=True)
    a_g = F.normalize(torch.randn(n_g, SIDE_DIM, device=device, generator=g), dim=1)
    b_g = F.normalize(torch.randn(n_g, SIDE_DIM, device=device, generator=g), dim=1)
    rows = slice(offset, offset + n_l)
    log_y, _ = build_targets(SideView(a_g[rows], a_g), SideView(b_g[rows], b_g), "selfsim", "same", 0.3, 0.07,
                             offset)  # fmt: skip
    keep = off_diagonal_mass(log_y, offset)
    spec = DirectionSpec(offset, "symkl", 1e-8, "forward", 0.5, 0.5, 0.25)

    def zero() -> None:
        u.grad = v_g.grad = s.grad = None

    def terms(fn: Callable) -> Callable[[], None]:
        def step() -> None:
            zero()
            fn(s * u @ v_g.T, log_y.clone(), keep, spec)[0].backward()  # log Y is overwritten by the fused path

        return step

    def logits_only() -> None:
        zero()
        z = s * u @ v_g.T
        z.backward(torch.ones_like(z))

    contenders = {"fused": terms(losses.direction_terms), "reference": terms(reference.direction_terms),
                  "logits_matmul_only": logits_only}  # fmt: skip
    out: dict[str, Any] = {"n_local": n_l, "n_global": n_g, "d": d, "offset": offset, "side_dim": SIDE_DIM,
                           "rows_kept": int(keep.sum()), "tf32": torch.backends.cuda.matmul.allow_tf32}  # fmt: skip
    for name, fn in contenders.items():
        out[name] = guarded(name, lambda fn=fn: {**stats(time_ms(fn, device, 2, repeats)), "peak_mib": peak_mib(fn, device)})
        print(f"objective block {n_l}x{n_g}: {name} {out[name].get('median_ms', float('nan')):.2f} ms", flush=True)
    if device.type == "cuda":
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            fn = contenders["fused"]
            out["fused_tf32"] = guarded("fused_tf32", lambda: {**stats(time_ms(fn, device, 2, repeats)),
                                                               "peak_mib": peak_mib(fn, device)})  # fmt: skip
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    f, r = out["fused"], out["reference"]
    if "median_ms" in f and "median_ms" in r:
        out["speedup_fused_vs_reference"] = r["median_ms"] / f["median_ms"]
        if f.get("peak_mib") and r.get("peak_mib"):
            out["memory_ratio_reference_vs_fused"] = r["peak_mib"] / f["peak_mib"]
    return out


def objective_full(n: int, d: int, device: torch.device, repeats: int) -> dict:
    """The whole single-process objective (paper defaults with side features) vs open_clip's ClipLoss at batch n."""
    from open_clip.loss import ClipLoss

    from softclip.objective import SoftCLIPObjective

    g = torch.Generator(device=device).manual_seed(0)
    u = F.normalize(torch.randn(n, d, device=device, generator=g), dim=1).requires_grad_()
    v = F.normalize(torch.randn(n, d, device=device, generator=g), dim=1).requires_grad_()
    a = torch.randn(n, SIDE_DIM, device=device, generator=g).requires_grad_()
    b = torch.randn(n, SIDE_DIM, device=device, generator=g)
    s = torch.tensor(1 / 0.07, device=device, requires_grad=True)
    clip = ClipLoss()
    fused, ref = SoftCLIPObjective(impl="fused"), SoftCLIPObjective(impl="reference")

    def zero() -> None:
        u.grad = v.grad = a.grad = s.grad = None

    def run_clip() -> None:
        zero()
        clip(u, v, s).backward()

    def run(obj: SoftCLIPObjective) -> Callable[[], None]:
        def step() -> None:
            zero()
            obj(u, v, s, a, b)["loss"].backward()

        return step

    out: dict[str, Any] = {"n": n, "d": d, "side_dim": SIDE_DIM}
    for name, fn in {"open_clip_ClipLoss": run_clip, "softclip_fused": run(fused),
                     "softclip_reference": run(ref)}.items():  # fmt: skip
        out[name] = guarded(name, lambda fn=fn: {**stats(time_ms(fn, device, 2, repeats)), "peak_mib": peak_mib(fn, device)})
        print(f"objective N={n}: {name} {out[name].get('median_ms', float('nan')):.2f} ms", flush=True)
    return out


# ------------------------------------------------------------------------------------- 2. throughput


def model_config(model_name: str) -> dict[str, Any]:
    """open_clip's config of ``model_name`` (softclip's tiny presets registered)."""
    import open_clip

    import softclip.models  # noqa: F401 - registers the tiny presets with open_clip

    return open_clip.get_model_config(model_name)


def clip_macs(model_name: str) -> dict[str, float]:
    """Multiply-accumulates of one sample's forward pass (towers and projections), from the open_clip config."""
    cfg = model_config(model_name)
    vis, txt, e = cfg["vision_cfg"], cfg["text_cfg"], cfg["embed_dim"]
    size = vis["image_size"] if isinstance(vis["image_size"], int) else vis["image_size"][0]
    p, w, layers, r = vis["patch_size"], vis["width"], vis["layers"], vis.get("mlp_ratio", 4.0)
    patches = (size // p) ** 2
    t = patches + 1
    vision = patches * 3 * p * p * w + layers * (t * (4 * w * w + 2 * r * w * w) + 2 * t * t * w) + w * e
    c, wt, lt, rt = txt["context_length"], txt["width"], txt["layers"], txt.get("mlp_ratio", 4.0)
    text = lt * (c * (4 * wt * wt + 2 * rt * wt * wt) + 2 * c * c * wt) + wt * e
    return {"vision_macs": vision, "text_macs": text, "forward_flops": 2 * (vision + text),
            "train_flops": 6 * (vision + text), "image_size": size, "context_length": c}  # fmt: skip


def synthetic_batch(model_name: str, batch: int, device: torch.device, roi_dim: int = 2054, kmax: int = 8) -> dict:
    """GPU-resident images, full-context random texts (EOT, the largest id, last) and paper-config side inputs."""
    cfg = model_config(model_name)
    size, ctx, vocab = clip_macs(model_name)["image_size"], cfg["text_cfg"]["context_length"], cfg["text_cfg"]["vocab_size"]
    g = torch.Generator(device=device).manual_seed(0)
    text = torch.randint(1, vocab - 1, (batch, ctx), device=device, generator=g)
    text[:, -1] = vocab - 1
    tags = torch.randint(1, vocab - 1, (batch, ctx), device=device, generator=g)
    tags[:, 12:] = 0
    tags[:, 11] = vocab - 1
    return {
        "image": torch.randn(batch, 3, size, size, device=device, generator=g),
        "text": text,
        "roi": torch.randn(batch, kmax, roi_dim, device=device, generator=g),
        "roi_mask": torch.rand(batch, kmax, device=device, generator=g) < 0.8,
        "tags": tags,
        "tags_mask": torch.ones(batch, dtype=torch.bool, device=device),
    }


class FakeStream:
    """What ``Trainer`` reads from its DataStream, serving one in-memory batch."""

    epoch = 0

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch
        self.loader = SimpleNamespace(bad=SimpleNamespace(counts={}))

    def next(self) -> dict[str, torch.Tensor]:
        return self.batch

    def state_dict(self) -> dict[str, Any]:
        return {}


def ours(model_name: str, batch: dict, device: torch.device, overrides: list[str], work: Path) -> Callable[[], None]:
    """One training step of our Trainer (bf16 autocast) on ``batch``."""
    from softclip.config import load_config
    from softclip.train import dist
    from softclip.train.run import _make_trainer, setup_model

    n = len(batch["image"])
    cfg = load_config(BASE, overrides=[f"model.name={model_name}", f"data.batch_size={n}", f"train.device={device.type}",
                                       "train.precision=bf16", "train.steps=1000000", "optim.warmup_steps=10",
                                       f"train.threads={1 if device.type == 'cpu' else 0}", *overrides])  # fmt: skip
    env = dist.setup(device.type)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sm, _, _ = setup_model(cfg, env, "bf16")
    keys = ("image", "text") if cfg.loss.image_source == "image" and cfg.loss.text_source == "text" else tuple(batch)
    trainer = _make_trainer(cfg, work, env, sm, FakeStream({k: batch[k] for k in keys}), None)
    return lambda: trainer._train_step()


def openclip(model_name: str, batch: dict, device: torch.device, steps: int) -> Callable[[], None]:
    """``steps`` training steps of open_clip_train's ``train_one_epoch`` (amp_bf16) on ``batch``."""
    import open_clip
    from open_clip.loss import ClipLoss
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None, precision="amp_bf16", device=device, output_dict=True)
    # open_clip_train.main's AdamW: no weight decay on gains, biases, norms and the logit scale
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
                                   {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.1}],
                                  lr=5e-4, betas=(0.9, 0.98), eps=1e-6)  # fmt: skip
    scheduler = cosine_lr(optimizer, 5e-4, 10, 1_000_000)
    loss = ClipLoss(local_loss=False, gather_with_grad=False, cache_labels=True, rank=0, world_size=1)
    n = len(batch["image"])

    class Loader:
        num_batches, num_samples = steps, steps * n

        def __iter__(self):
            return iter([(batch["image"], batch["text"])] * steps)

    data = {"train": SimpleNamespace(dataloader=Loader(), set_epoch=lambda epoch: None)}
    args = SimpleNamespace(device=str(device), precision="amp_bf16", distill=False, accum_freq=1, skip_scheduler=False,
                           grad_clip_norm=1.0, horovod=False, log_every_n_steps=10**9, batch_size=n, world_size=1,
                           rank=0, local_rank=0, wandb=False)  # fmt: skip
    epoch = [0]

    def run() -> None:
        train_one_epoch(model, data, loss, epoch[0], optimizer, None, scheduler, None, args)
        epoch[0] += 1

    return run


def matmul_peak(device: torch.device) -> dict:
    """FLOP/s of a large dense matmul: 8192^3 bf16 on CUDA (512^3 fp32 on the CPU)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_ms(lambda: torch.mm(a, b), device, 5, 20)
    return {"n": n, "dtype": str(dtype), "flops": 2 * n**3 / (statistics.median(times) / 1e3), "median_ms": statistics.median(times)}


def counted_flops(model_name: str, device: torch.device, n: int = 4) -> float:
    """FLOPs per sample of one forward + backward of the open_clip model (FlopCounterMode), bf16 autocast."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    model = open_clip.create_model(model_name, pretrained=None, device=device)
    batch = synthetic_batch(model_name, n, device)
    with FlopCounterMode(display=False) as counter, torch.autocast(device.type, dtype=torch.bfloat16):
        img, txt, _ = model(batch["image"], batch["text"])
        ((img.float() @ txt.float().T).sum()).backward()
    del model
    return counter.get_total_flops() / n


def throughput(sizes: dict, device: torch.device, peak_spec: float | None) -> dict:
    """Samples/s of open_clip_train vs our trainer's variants, alternating, on one synthetic batch."""
    model_name, n, steps = sizes["model"], sizes["batch"], sizes["steps"]
    batch = synthetic_batch(model_name, n, device)
    flops = clip_macs(model_name)
    counted = guarded("flop counter", lambda: {"per_sample": counted_flops(model_name, device)})
    peak = guarded("matmul peak", lambda: matmul_peak(device))
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    runners: dict[str, Callable[[], None]] = {}
    per_call: dict[str, int] = {}
    errors: dict[str, str] = {}
    for name, build in [("open_clip_train", lambda: openclip(model_name, batch, device, steps)),
                        *[(k, lambda v=v, k=k: ours(model_name, batch, device, v, work / k)) for k, v in VARIANTS.items()]]:  # fmt: skip
        try:
            runners[name] = build()
            per_call[name] = steps if name == "open_clip_train" else 1
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            errors[name] = f"{type(err).__name__}: {str(err)[:300]}"
    times: dict[str, list[float]] = {k: [] for k in runners}
    peaks: dict[str, float | None] = {}
    for name, fn in list(runners.items()):  # warm-up (and the peak memory of one step)
        try:
            for _ in range(max(1, sizes["warmup"] // per_call[name])):
                fn()
            peaks[name] = peak_mib(fn, device)  # open_clip_train: over one call of ``steps`` steps
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            errors[name] = f"{type(err).__name__}: {str(err)[:300]}"
            runners.pop(name)
    names = list(runners)
    for r in range(sizes["repeats"]):
        for name in names[r % max(len(names), 1):] + names[: r % max(len(names), 1)]:
            fn, calls = runners[name], steps // per_call[name]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
        print(f"throughput repeat {r}: " + ", ".join(f"{k}={n / v[-1]:.0f}/s" for k, v in times.items() if v), flush=True)
    rows: dict[str, Any] = {}
    for name, ts in times.items():
        if not ts:
            continue
        step = statistics.median(ts)
        rate = n / step
        achieved = rate * flops["train_flops"]
        rows[name] = {"step_ms": 1e3 * step, "samples_per_s": rate, "achieved_flops": achieved,
                      "mfu_spec": achieved / peak_spec if peak_spec else None,
                      "mfu_measured_peak": achieved / peak["flops"] if "flops" in peak else None,
                      "peak_step_mib": peaks.get(name), "repeats_samples_per_s": [round(n / t, 1) for t in ts]}  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    base = rows.get("open_clip_train")
    for row in rows.values():
        row["ratio_vs_open_clip"] = row["samples_per_s"] / base["samples_per_s"] if base else None
    return {"model": model_name, "batch": n, "image_size": flops["image_size"], "steps_per_repeat": steps,
            "repeats": sizes["repeats"], "precision": "bf16 autocast, fp32 weights", "flops": flops,
            "flop_counter": counted, "matmul_peak": peak, "peak_spec_flops": peak_spec, "rows": rows,
            "errors": errors}  # fmt: skip


# ---------------------------------------------------------------------------------------------- report


def _f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(res: dict) -> list[str]:
    dry = res["dry_run"]
    lines = [f"## gpu_bench{' (dry run: CPU, tiny sizes; the numbers mean nothing)' if dry else ''}", "",
             f"{res['device']}; torch {res['torch']} (CUDA {res['cuda']}), open_clip {res['open_clip']}; "
             f"{res['elapsed_s']:.0f} s. Method and formulas: the docstring of `benchmarks/gpu_bench.py`.", ""]  # fmt: skip
    blk = res["objective_block"]
    lines += [f"### Objective, one rank's block: {blk['n_local']} x {blk['n_global']}, d={blk['d']} "
              f"(direction_terms, fwd+bwd incl. the logits product)", "",
              "| contender | median ms | min-max ms | peak MiB |", "|---|---:|---:|---:|"]  # fmt: skip
    for k in ("fused", "reference", "logits_matmul_only", "fused_tf32"):
        r = blk.get(k)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {k} | {r['error']} | | |")
        else:
            lines.append(f"| {k} | {r['median_ms']:.2f} | {r['min_ms']:.2f}-{r['max_ms']:.2f} | {_f(r['peak_mib'], '.0f')} |")
    lines += ["", f"Fused vs reference: {_f(blk.get('speedup_fused_vs_reference'))}x faster, "
              f"{_f(blk.get('memory_ratio_reference_vs_fused'))}x leaner.", ""]  # fmt: skip
    full = res["objective_full"]
    lines += [f"### Whole objective, one process, N={full['n']}, d={full['d']}", "",
              "| contender | median ms | peak MiB |", "|---|---:|---:|"]  # fmt: skip
    for k in ("open_clip_ClipLoss", "softclip_fused", "softclip_reference"):
        r = full[k]
        lines.append(f"| {k} | {r['error']} | |" if "error" in r else
                     f"| {k} | {r['median_ms']:.2f} | {_f(r['peak_mib'], '.0f')} |")  # fmt: skip
    tp = res["throughput"]
    fl = tp["flops"]
    lines += ["", f"### Throughput: {tp['model']} at {tp['image_size']} px, batch {tp['batch']}, {tp['precision']}", "",
              "| trainer | samples/s | step ms | vs open_clip_train | MFU (989 TFLOP/s spec) | MFU (measured matmul peak) "
              "| peak MiB per step |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for k, r in tp["rows"].items():
        lines.append(f"| {k} | {r['samples_per_s']:.1f} | {r['step_ms']:.1f} | {_f(r['ratio_vs_open_clip'])} | "
                     f"{_f(r['mfu_spec'], '.1%')} | {_f(r['mfu_measured_peak'], '.1%')} | {_f(r['peak_step_mib'], '.0f')} |")
    for k, e in tp["errors"].items():
        lines.append(f"| {k} | {e} | | | | | |")
    counted = tp["flop_counter"].get("per_sample")
    peak = tp["matmul_peak"]
    lines += ["", f"Training FLOPs per sample: 6 x ({fl['vision_macs'] / 1e9:.2f} + {fl['text_macs'] / 1e9:.2f}) GMAC = "
              f"{fl['train_flops'] / 1e9:.1f} GFLOP (FlopCounterMode, one fwd+bwd: "
              f"{_f(None if counted is None else counted / 1e9, '.1f')} GFLOP). Measured matmul peak: "
              f"{_f(peak.get('flops', 0) / 1e12, '.3g')} TFLOP/s ({peak.get('dtype', '-')} {peak.get('n', '-')}^3). "
              "open_clip_train runs its own train_one_epoch; ours is Trainer._train_step (per-step seeding, "
              "finiteness check with one host sync, fused AdamW); both on the same GPU-resident synthetic batch, "
              "no data loading.", ""]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/gpu_check"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (also SOFTCLIP_GPU_DRY_RUN=1)")
    args = parser.parse_args(argv)
    dry = args.dry_run or os.environ.get("SOFTCLIP_GPU_DRY_RUN") == "1" or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        torch.set_num_threads(1)
    import logging

    import open_clip

    logging.basicConfig(level=logging.WARNING)
    sizes = DRY if dry else FULL
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    peak_spec = H200_BF16_DENSE if "H200" in name or "H100" in name else None
    t0 = time.perf_counter()
    res: dict[str, Any] = {"benchmark": "gpu_bench", "dry_run": dry, "device": name, "torch": torch.__version__,
                           "cuda": torch.version.cuda, "open_clip": open_clip.__version__, "sizes": sizes,
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    n_l, n_g, d = sizes["block"]
    res["objective_block"] = objective_block(n_l, n_g, d, device, sizes["timing_repeats"])
    res["objective_full"] = objective_full(sizes["objective_n"], d, device, sizes["timing_repeats"])
    res["throughput"] = throughput(sizes, device, peak_spec)
    res["elapsed_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_bench.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    text = "\n".join(markdown(res)) + "\n"
    with open(args.out / "gpu.md", "a", encoding="utf-8") as f:
        f.write(text)
    print(text)
    bad = [k for k, v in res["throughput"]["rows"].items() if not math.isfinite(v["samples_per_s"])]
    failed = bool(res["throughput"]["errors"] or bad or any(
        "error" in v for part in ("objective_block", "objective_full") for v in res[part].values() if isinstance(v, dict)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
