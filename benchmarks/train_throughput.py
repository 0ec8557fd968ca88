"""Trainer throughput: our loop against open_clip's, SoftCLIP's overhead, and achieved FLOP/s.

1. Samples/s of ``softclip.train.train`` with the plain CLIP objective against ``open_clip_train.main``
   (the reference trainer shipped with open_clip_torch), same tiny model (tiny-vit-32, registered with
   open_clip by a short launcher), same SynthScenes webdataset shards, batch, data workers, threads, fp32,
   optimiser hyper-parameters and gradient clipping, no evaluation, no checkpoints inside the timed steps.
   Each trainer runs in a fresh process; runs alternate and repeat, and the median over the post-warm-up log
   intervals of each run is reported (open_clip's ``Batch (t)`` averages, our ``samples_per_s`` lines: both
   are wall time per step over the interval, data wait included).
2. Step time of our trainer with the SoftCLIP objective against the CLIP objective: the objective alone
   (image/text sources) and the paper's configuration (ROI and tag sources, which add sidecar decoding and a
   no-grad pass of the tags through the text tower).
3. FLOPs of one training step (forward + objective + backward) counted with
   ``torch.utils.flop_counter.FlopCounterMode``; achieved FLOP/s of a full step (optimiser included) as a
   fraction of a large fp32 matmul's FLOP/s on the same threads; and the optimiser's share, fused vs foreach
   AdamW, with the token-embedding table (49408 x 128, most of a tiny model's parameters) timed on its own.

    python benchmarks/train_throughput.py [--steps 40] [--batch-size 32] [--repeats 2] [--out reports/perf]

Writes ``train.json`` (results are data) and ``train.md`` under ``--out``. ``--quick`` shrinks everything for
a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-vit-32"
CLIP_LOSS = {
    "target": "hard",
    "soft_weight": 0.0,
    "re_weight": 0.0,
    "image_source": "image",
    "text_source": "text",
}
VARIANTS = {  # name -> (loss overrides, optim overrides, train overrides)
    "clip": (CLIP_LOSS, {}, {}),
    "clip_foreach_adamw": (CLIP_LOSS, {"fused": False}, {}),
    "clip_compiled": (CLIP_LOSS, {}, {"compile": True}),
    "clip_system_heap": (CLIP_LOSS, {}, {"host_memory": "system"}),
    "softclip_objective": ({"image_source": "image", "text_source": "text"}, {}, {}),
    "softclip_paper": ({}, {}, {}),
}
# open_clip_train's tar grouping predates webdataset 1.0's end-of-shard marker (an empty dict, which it reads
# as a file and fails on); the launcher drops those markers, as webdataset <= 0.2.86 never emitted them. With
# "cpu" as its second argument it also points open_clip's step clock at the process CPU time, so its
# "Batch (t)" lines report CPU seconds per step, as our ``step_cpu_s`` does.
OPENCLIP_LAUNCHER = (
    "import sys, time, types, open_clip, open_clip_train.data as d, open_clip_train.train as t; "
    "open_clip.add_model_config(sys.argv[1]); group = d.group_by_keys_nothrow; "
    "d.group_by_keys_nothrow = lambda data, *a, **k: group((s for s in data if s), *a, **k); "
    "t.time = types.SimpleNamespace(time=time.process_time) if sys.argv[2] == 'cpu' else time; "
    "from open_clip_train.main import main; main(sys.argv[3:])"
)
NOTES = [
    "## Notes",
    "",
    "- open_clip_train's tar grouping (`group_by_keys_nothrow`) predates webdataset 1.0's end-of-shard "
    "marker (an empty dict) and fails on it; the launcher filters the markers out, which is what "
    "webdataset <= 0.2.86 (open_clip's pinned range) produced. Nothing else in open_clip is changed.",
    "- Both trainers read the same shards with one worker process and compute on the same number of threads "
    "(OMP_NUM_THREADS and, for ours, `train.threads`); open_clip's data pipeline shuffles with its own "
    "buffers, ours with the deterministic plan of `softclip.data.loader`.",
    "- Our trainer asks glibc to keep freed host memory in its heap (`train.host_memory: retain`, the default; "
    "`mallopt` mmap threshold 32 MiB, no trimming below 1 GiB free), so large per-step tensors reuse mapped "
    "pages; open_clip_train runs with the C library's defaults.",
    "- Our trainer pays for exactness on every step: a seed per step, a data-position snapshot, a finiteness "
    "check of loss and gradient norm (one host sync), and the gradient norm for the metrics.",
    "- The token-embedding table (vocabulary 49408 x width 128) is most of a tiny model's parameters, but "
    "only the rows of tokens in the batch get gradient. Dense AdamW still reads and writes parameter, "
    "gradient and both moments for every row each step (exact AdamW semantics need it: moments decay and "
    "decoupled weight decay applies to untouched rows too). The fused kernel makes that cheap; a sparse or "
    "lazy optimiser would change the semantics, and a model config with a smaller vocabulary would remove "
    "the cost altogether.",
    "",
]
BATCH_TIME = re.compile(r"Batch \(t\): ([0-9.]+)")


def make_data(folder: Path, n_train: int) -> Path:
    """SynthScenes at 32 px with ``n_train`` training pairs and minimal evaluation sets."""
    from softclip.data.synth import SynthConfig, generate

    spec = SynthConfig.preset(
        "smoke",
        n_train=n_train,
        samples_per_shard=256,
        n_zeroshot_per_class=1,
        n_retrieval_images=1,
        n_landmarks=1,
        n_instance_distractors=0,
        n_copydays_distractors=0,
        n_whitening=0,
    )
    generate(folder, spec, seed=0, workers=1)
    return folder


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _run_child(cmd: list[str], cwd: Path, threads: int, what: str) -> tuple[str, float]:
    """Run ``cmd``; returns (stdout + stderr, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(threads), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, time.perf_counter() - t0


def _rates(batch_size: int, step_times: list[float], step_cpu: list[float]) -> dict:
    return {
        "samples_per_s": statistics.median(batch_size / t for t in step_times),
        "step_time_s": statistics.median(step_times),
        "step_cpu_s": statistics.median(step_cpu),
        "samples_per_cpu_s": batch_size / statistics.median(step_cpu),
        "intervals": [round(batch_size / t, 2) for t in step_times],
    }


def run_ours(data: Path, work: Path, variant: tuple[dict, dict, dict], args: argparse.Namespace, tag: str) -> dict:
    """One fresh-process run of our trainer: wall and CPU time per step over post-warm-up log intervals (the
    first interval, which holds the warm-up and, with ``train.compile``, the compilation, is left out)."""
    run_dir = work / f"ours-{tag}"
    loss, optim, extra = variant
    train = {"steps": args.steps, "log_every": args.log_every, "ckpt_every": 10**6, "threads": args.threads, **extra}
    cfg = {
        "name": tag,
        "seed": 0,
        "model": {"name": MODEL},
        "loss": loss,
        "data": {"source": "wds", "root": str(data), "batch_size": args.batch_size, "workers": args.workers,
                 "roi_dim": 32, "shuffle_buffer": 256},
        "optim": {"lr": 5e-4, "warmup_steps": 10, "grad_clip": 1.0, **optim},
        "train": {**train, "device": "cpu", "precision": "fp32"},
    }  # fmt: skip
    path = work / f"ours-{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = (
        "import sys; from softclip.config import load_config; from softclip.train import train; "
        "train(load_config(sys.argv[1]), sys.argv[2], overwrite=True); import resource; "
        "print('minflt', resource.getrusage(resource.RUSAGE_SELF).ru_minflt)"
    )
    cmd = [sys.executable, "-c", code, str(path), str(run_dir)]
    out, wall = _run_child(cmd, ROOT, args.threads, "our trainer")
    minflt = int(re.findall(r"^minflt (\d+)$", out, re.M)[-1])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(run_dir)  # its final checkpoint is ~90 MB
    train = [r for r in lines if r["kind"] == "train"][1:]  # the first interval holds warm-up
    rates = _rates(args.batch_size, [r["step_time_s"] for r in train], [r["step_cpu_s"] for r in train])
    return {**rates, "data_time_s": statistics.median(r["data_time_s"] for r in train), "wall_s": wall,
            "minflt_per_step": minflt / args.steps}


def openclip_args(data: Path, work: Path, args: argparse.Namespace, tag: str) -> list[str]:
    """open_clip_train.main arguments matching our runs (hyper-parameters as in ``run_ours``)."""
    shards = sorted((data / "train").glob("*.tar"))
    options = {
        "train-data": str(data / "train" / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar"),
        "dataset-type": "webdataset",
        "train-num-samples": args.steps * args.batch_size,
        "batch-size": args.batch_size,
        "epochs": 1,
        "workers": args.workers,
        "precision": "fp32",
        "model": MODEL,
        "lr": 5e-4,
        "wd": 0.1,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-6,
        "warmup": 10,
        "grad-clip-norm": 1.0,
        "save-frequency": 0,
        "zeroshot-frequency": 0,
        "val-frequency": 0,
        "log-every-n-steps": args.log_every,
        "logs": str(work / "openclip-logs"),
        "name": f"bench-{tag}-{os.getpid()}",
        "seed": 0,
    }
    return [x for key, value in options.items() for x in (f"--{key}", str(value))]


def run_openclip(data: Path, work: Path, args: argparse.Namespace, tag: str) -> dict:
    """Two fresh-process runs of ``open_clip_train.main``: wall clock, then CPU clock for its step timer."""
    from softclip.models import MODEL_CONFIG_DIR

    per_step = {}
    for clock in ("wall", "cpu"):
        cmd = [sys.executable, "-c", OPENCLIP_LAUNCHER, str(MODEL_CONFIG_DIR), clock]
        out, wall = _run_child(
            cmd + openclip_args(data, work, args, f"{tag}-{clock}"), work, args.threads, "open_clip"
        )
        times = [float(x) for x in BATCH_TIME.findall(out)]
        per_step[clock] = (
            times[1:-1] if len(times) > 3 else times[1:]
        )  # first: one warm-up step; last: partial
    return {**_rates(args.batch_size, per_step["wall"], per_step["cpu"]), "wall_s": wall}


# ------------------------------------------------------------------------------------------ in-process


def _median_time(fn, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` (process time: on a shared machine, other jobs do not count)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def matmul_flops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an n x n fp32 matmul."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _median_time(lambda: torch.mm(a, b), repeats)


def objective_overhead(batch_size: int, threads: int, rounds: int) -> dict:
    """Full-step time (forward, objective, backward, fused AdamW) per objective, interleaved round by round.

    Same model (with the parameter-free mean ROI aggregator), same batch; the order of variants rotates every
    round; times are process CPU time (one compute thread), so other jobs on a shared machine count less,
    and the overheads are medians of within-round ratios.
    """
    from softclip.config import ModelConfig, OptimConfig, RoiConfig
    from softclip.models import build_model
    from softclip.objective import SoftCLIPObjective
    from softclip.train.optim import build_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, _, _, tokenizer = build_model(ModelConfig(name=MODEL), RoiConfig(aggregation="mean"), roi_in_dim=32)
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(batch_size, 3, 32, 32, generator=g),
        "text": tokenizer([f"a small red circle and {i} blue squares" for i in range(batch_size)]),
        "roi": torch.randn(batch_size, 8, 32, generator=g),
        "roi_mask": torch.arange(8).expand(batch_size, 8) < torch.randint(0, 5, (batch_size, 1), generator=g),
        "tags": tokenizer(["red circle, blue square, blue square"] * batch_size),
        "tags_mask": torch.ones(batch_size, dtype=torch.bool),
    }
    optimizer = build_optimizer(OptimConfig(fused=True), model, torch.device("cpu"))
    clip = SoftCLIPObjective(target="hard", soft_weight=0.0, re_weight=0.0)
    soft = SoftCLIPObjective()  # paper defaults: selfsim, beta 0.3, tau 0.07, symkl, lambda 1, mu 0.5
    variants = {"clip": (clip, "image", "text"), "softclip_objective": (soft, "image", "text"),
                "softclip_paper": (soft, "roi", "tag")}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            objective, image_source, text_source = variants[name]
            t0 = time.process_time()
            objective(**model(batch, image_source=image_source, text_source=text_source))["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if r:  # round 0 warms up
                times[name].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(name: str) -> float:  # median over rounds of the within-round ratio to CLIP
        return statistics.median(a / b for a, b in zip(times[name], times["clip"], strict=True)) - 1

    return {
        "step_s": med,
        "overhead_objective": paired("softclip_objective"),
        "overhead_paper": paired("softclip_paper"),
        "rounds": rounds,
    }


def step_flops(batch_size: int, threads: int, repeats: int) -> dict:
    """FLOPs per training step, achieved FLOP/s, and the optimiser's share (fused vs foreach AdamW)."""
    from torch.utils.flop_counter import FlopCounterMode

    from softclip.config import ModelConfig, OptimConfig
    from softclip.models import build_model
    from softclip.objective import SoftCLIPObjective
    from softclip.train.optim import build_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, _, _, tokenizer = build_model(ModelConfig(name=MODEL))
    objective = SoftCLIPObjective(target="hard", soft_weight=0.0, re_weight=0.0)
    batch = {
        "image": torch.randn(batch_size, 3, 32, 32),
        "text": tokenizer([f"a small red circle and {i} blue squares" for i in range(batch_size)]),
    }
    cpu = torch.device("cpu")
    fused = build_optimizer(OptimConfig(fused=True), model, cpu)
    foreach = build_optimizer(OptimConfig(fused=False), model, cpu)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        objective(**model(batch, image_source="image", text_source="text"))["loss"].backward()

    with FlopCounterMode(display=False) as counter:
        fwd_bwd()
    flops = counter.get_total_flops()
    t_fb = _median_time(fwd_bwd, repeats)
    t_fused = _median_time(fused.step, repeats)
    t_foreach = _median_time(foreach.step, repeats)
    table = model.clip.token_embedding.weight
    emb_only = torch.optim.AdamW([table], lr=5e-4, fused=True)
    t_emb = _median_time(emb_only.step, repeats)
    n_params = sum(p.numel() for p in model.parameters())
    step = t_fb + t_fused
    return {
        "flops_per_step": flops,
        "params": n_params,
        "token_embedding_params": table.numel(),
        "fwd_bwd_s": t_fb,
        "adamw_fused_s": t_fused,
        "adamw_foreach_s": t_foreach,
        "adamw_token_table_s": t_emb,
        "step_s": step,
        "achieved_flops": flops / step,
        "fwd_bwd_flops": flops / t_fb,
        "optimizer_share_fused": t_fused / step,
        "optimizer_share_foreach": t_foreach / (t_fb + t_foreach),
    }


# --------------------------------------------------------------------------------------------- report


def _section_trainers(result: dict) -> list[str]:
    s, runs = result["summary"], result["runs"]
    rows = [
        ("softclip.train (CLIP loss)", "clip"),
        ("softclip.train (CLIP loss, non-fused foreach AdamW)", "clip_foreach_adamw"),
        ("softclip.train (CLIP loss, train.compile=true, after the compile)", "clip_compiled"),
        ("softclip.train (CLIP loss, train.host_memory=system: libc's heap defaults)", "clip_system_heap"),
        ("open_clip_train.main", "openclip"),
    ]
    return [
        "## 1. Our trainer (plain CLIP objective) vs open_clip_train",
        "",
        "| trainer | samples/s (wall, median) | samples per CPU-second | wall samples/s per repeat |",
        "|---|---:|---:|---|",
        *(
            f"| {label} | {s[f'{k}_samples_per_s']:.1f} | {s[f'{k}_samples_per_cpu_s']:.1f} | {runs[k]} |"
            for label, k in rows
        ),
        "",
        f"Ours / open_clip: **{s['ratio_vs_openclip']:.2f}x** wall (median of within-repeat ratios), "
        f"**{s['cpu_ratio_vs_openclip']:.2f}x** per CPU-second (goal >= 1.5x). With a non-fused (foreach) "
        f"AdamW instead of our fused default: {s['ratio_foreach_vs_openclip']:.2f}x wall, "
        f"{s['cpu_ratio_foreach_vs_openclip']:.2f}x per CPU-second. open_clip builds `torch.optim.AdamW` "
        "with torch's defaults, which on CPU is the single-tensor loop.",
        "",
        f"With `train.host_memory=system` (glibc's defaults: large blocks mapped fresh and unmapped on free, "
        f"so each step faults them in again) instead of our `retain`: "
        f"{s['cpu_ratio_system_heap_vs_openclip']:.2f}x per CPU-second; `retain` is "
        f"{s['heap_speedup_cpu']:.2f}x of it per CPU-second "
        f"({s['clip_minflt_per_step']:.0f} vs {s['clip_system_heap_minflt_per_step']:.0f} minor page faults "
        "per step, whole run).",
        "",
        f"With `train.compile=true` (torch.compile of the two towers, inductor cache shared by the runs): "
        f"**{s['ratio_compiled_vs_openclip']:.2f}x** wall, **{s['cpu_ratio_compiled_vs_openclip']:.2f}x** per "
        f"CPU-second once compiled ({s['compiled_speedup_cpu']:.2f}x our uncompiled step per CPU-second); the "
        f"compilation costs {s['compile_warmup_s']:.0f} s of wall time per process (median run wall time, "
        "compiled minus uncompiled, the kernels already in the cache), "
        + (f"repaid after ~{s['compile_break_even_steps']:.0f} steps at this batch."
           if math.isfinite(s["compile_break_even_steps"]) else "never repaid: the compiled step is slower here."),
        "",
        "CPU seconds per step are the training process's CPU time per step over the same log intervals "
        "(ours: `step_cpu_s` in metrics.jsonl; open_clip: its own step timer pointed at the process CPU "
        "clock, in a second run); the data worker runs in its own process for both and is not counted. On "
        "this shared machine wall-clock rates swing with other jobs' load; CPU time is the steadier measure.",
        "",
    ]


def _section_objective(result: dict) -> list[str]:
    s, o = result["summary"], result["objective_overhead"]
    step = o["step_s"]
    return [
        "## 2. SoftCLIP objective overhead (step time)",
        "",
        f"Interleaved in one process ({o['rounds']} rounds, rotating order; CPU time of one thread, medians; "
        f"overheads are medians of within-round ratios; forward + objective + backward + fused AdamW, "
        f"batch {result['batch_size']}):",
        "",
        "| variant | step time (ms) | overhead vs CLIP |",
        "|---|---:|---:|",
        f"| CLIP objective | {step['clip'] * 1e3:.1f} | - |",
        f"| SoftCLIP objective (image/text sources) | {step['softclip_objective'] * 1e3:.1f} | "
        f"{s['overhead_objective']:+.1%} |",
        f"| SoftCLIP paper config (ROI + tag sources) | {step['softclip_paper'] * 1e3:.1f} | "
        f"{s['overhead_paper']:+.1%} |",
        "",
        "Goal: <= 5% for the objective. The paper configuration also runs the tags through the text tower "
        "(no gradient): one more text forward pass per step.",
        "",
        "In full trainer runs (CPU seconds per step as in section 1): SoftCLIP "
        f"objective {s['overhead_softclip_objective_runs_cpu']:+.1%}, paper configuration with sidecar "
        f"decoding {s['overhead_softclip_paper_runs_cpu']:+.1%}.",
        "",
    ]


def _section_flops(result: dict) -> list[str]:
    s, f, peak = result["summary"], result["flops"], result["matmul_flops"]
    ms = {k: f[k] * 1e3 for k in ("fwd_bwd_s", "adamw_fused_s", "adamw_foreach_s", "adamw_token_table_s")}
    return [
        "## 3. FLOPs and the optimiser",
        "",
        f"- FLOPs per step (forward + objective + backward, FlopCounterMode): "
        f"{f['flops_per_step'] / 1e9:.2f} GFLOP at batch {result['batch_size']}.",
        f"- Step (CPU time: fwd+bwd {ms['fwd_bwd_s']:.1f} ms + fused AdamW {ms['adamw_fused_s']:.1f} ms): "
        f"{f['achieved_flops'] / 1e9:.2f} GFLOP/s achieved vs {peak / 1e9:.2f} GFLOP/s for a 1024^3 fp32 "
        f"matmul on the same thread(s): **{s['flop_fraction']:.1%}** of the matmul rate "
        f"(forward+backward alone: {f['fwd_bwd_flops'] / peak:.1%}).",
        f"- Parameters: {f['params'] / 1e6:.2f} M, of which the token-embedding table holds "
        f"{f['token_embedding_params'] / 1e6:.2f} M ({f['token_embedding_params'] / f['params']:.0%}).",
        f"- AdamW step: fused {ms['adamw_fused_s']:.1f} ms vs foreach {ms['adamw_foreach_s']:.1f} ms; the "
        f"token table alone (fused) {ms['adamw_token_table_s']:.1f} ms. Optimiser share of a step: "
        f"{f['optimizer_share_fused']:.1%} fused, {f['optimizer_share_foreach']:.1%} foreach.",
        "",
    ]


def write_report(result: dict, out: Path) -> None:
    """``train.json`` and ``train.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=1))
    host = result["host"]
    lines = [
        "# Trainer throughput",
        "",
        f"Generated by `python benchmarks/train_throughput.py` on {host['cpus']} CPUs ({host['platform']}, "
        f"torch {host['torch']}, open_clip {host['open_clip']}).",
        f"Setup: {result['model']}, batch {result['batch_size']}, {result['steps']} steps per run, "
        f"{result['workers']} data worker(s), {result['threads']} compute thread(s), fp32, SynthScenes 32 px "
        f"webdataset shards; {result['repeats']} alternating repeats, each the median over its post-warm-up "
        "log intervals.",
        f"Load average: {host['loadavg_before']} before, {host['loadavg_after']} after (a shared machine: "
        "absolute rates are noisy; ratios of interleaved runs less so).",
        "",
        *_section_trainers(result),
        *_section_objective(result),
        *_section_flops(result),
        *NOTES,
    ]
    (out / "train.md").write_text("\n".join(lines) + "\n")


def measure_trainers(data: Path, args: argparse.Namespace) -> dict[str, list[dict]]:
    """``repeats`` runs of every trainer; the order rotates every repeat."""
    names = ["openclip", *VARIANTS]
    runs: dict[str, list[dict]] = {k: [] for k in names}
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            if name == "openclip":
                runs[name].append(run_openclip(data, args.work, args, f"r{rep}"))
            else:
                runs[name].append(run_ours(data, args.work, VARIANTS[name], args, f"{name}-r{rep}"))
        print(f"repeat {rep}: " + ", ".join(f"{k}={v[-1]['samples_per_s']:.1f}/s" for k, v in runs.items()))
    return runs


def summarise(runs: dict[str, list[dict]], flops: dict, peak: float, overhead: dict, batch: int) -> dict:
    """Medians over repeats and the ratios the report states."""

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    def paired(name: str) -> float:  # wall-clock ratio to open_clip within each repeat
        return statistics.median(
            a["samples_per_s"] / b["samples_per_s"] for a, b in zip(runs[name], runs["openclip"], strict=True)
        )

    s = {f"{k}_samples_per_s": med(k, "samples_per_s") for k in runs}
    s.update({f"{k}_samples_per_cpu_s": batch / med(k, "step_cpu_s") for k in runs})
    s["ratio_vs_openclip"] = paired("clip")
    s["ratio_foreach_vs_openclip"] = paired("clip_foreach_adamw")
    s["cpu_ratio_vs_openclip"] = s["clip_samples_per_cpu_s"] / s["openclip_samples_per_cpu_s"]
    s["cpu_ratio_foreach_vs_openclip"] = (
        s["clip_foreach_adamw_samples_per_cpu_s"] / s["openclip_samples_per_cpu_s"]
    )
    s["cpu_ratio_system_heap_vs_openclip"] = (
        s["clip_system_heap_samples_per_cpu_s"] / s["openclip_samples_per_cpu_s"]
    )
    s["heap_speedup_cpu"] = s["clip_samples_per_cpu_s"] / s["clip_system_heap_samples_per_cpu_s"]
    for name in ("clip", "clip_system_heap"):
        s[f"{name}_minflt_per_step"] = med(name, "minflt_per_step")
    s["ratio_compiled_vs_openclip"] = paired("clip_compiled")
    s["cpu_ratio_compiled_vs_openclip"] = s["clip_compiled_samples_per_cpu_s"] / s["openclip_samples_per_cpu_s"]
    s["compiled_speedup_cpu"] = s["clip_compiled_samples_per_cpu_s"] / s["clip_samples_per_cpu_s"]
    s["compile_warmup_s"] = med("clip_compiled", "wall_s") - med("clip", "wall_s")
    saved = med("clip", "step_time_s") - med("clip_compiled", "step_time_s")
    s["compile_break_even_steps"] = s["compile_warmup_s"] / saved if saved > 0 else float("inf")
    for name in ("softclip_objective", "softclip_paper"):
        s[f"overhead_{name}_runs_cpu"] = med(name, "step_cpu_s") / med("clip", "step_cpu_s") - 1
    s["overhead_objective"] = overhead["overhead_objective"]
    s["overhead_paper"] = overhead["overhead_paper"]
    s["flop_fraction"] = flops["achieved_flops"] / peak
    return s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench" / "train_throughput")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-train")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "perf")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke run)")
    parser.add_argument("--report-only", action="store_true", help="rewrite train.md from OUT/train.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.log_every, args.repeats = 12, 16, 3, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.report_only:
        result = json.loads((args.out / "train.json").read_text())
        write_report(result, args.out)
        return result
    import open_clip

    args.work.mkdir(parents=True, exist_ok=True)
    data = make_data(args.data, max(args.steps * args.batch_size, 1024))
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = measure_trainers(data, args)
    overhead = objective_overhead(args.batch_size, args.threads, rounds=5 if args.quick else 30)
    flops = step_flops(args.batch_size, args.threads, repeats=5 if args.quick else 15)
    peak = matmul_flops(args.threads)
    result = {
        "benchmark": "train_throughput",
        "model": MODEL,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "workers": args.workers,
        "threads": args.threads,
        "repeats": args.repeats,
        "summary": summarise(runs, flops, peak, overhead, args.batch_size),
        "objective_overhead": overhead,
        "flops": flops,
        "matmul_flops": peak,
        "runs": {k: [round(r["samples_per_s"], 2) for r in v] for k, v in runs.items()},
        "details": runs,
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_report(result, args.out)
    print(json.dumps(result["summary"], indent=1))
    return result


if __name__ == "__main__":
    main()
