"""Power study of the quick profile (issue #14): can a candidate design tell soft targets apart?

For each candidate design (model, steps, batch, learning rate) it trains plain CLIP (``loss.target=hard``) and the
oracle positive control (``loss.target=oracle``) for the same seeds on one SynthScenes data set with large
evaluation sets, then reports, per headline metric:

- CLIP's mean ± seed std (and its per-attribute zero-shot accuracy: colour, shape; chance 25% each),
- the std of the paired per-seed difference oracle − CLIP, its mean with the 95% Student-t interval, and the
  minimum detectable paired effect (α = 0.05, power 0.8) at 5 and 10 seeds (``softclip.report.stats``),
- CPU-seconds and wall seconds per run (``os.wait4`` rusage of each ``softclip train`` process, evaluation
  included) and the evaluation's own time.

Only the two calibration-legal methods are trained (DESIGN.md: the benchmark is calibrated with the oracle and
CLIP's learnability, never toward a method under test). Runs go to ``--runs`` (resumable: a finished run with its
``power.json`` record is skipped), ``--jobs`` single-threaded processes at a time.

    python benchmarks/power.py [--candidates vit-p8-160,rn32-600] [--seeds 0,1,2] [--jobs 2]
                               [--out reports/synthscenes] [--report-only]

Writes ``power.json`` (every run's record and the summary) and ``power.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softclip.atomic import atomic_write  # noqa: E402
from softclip.report.stats import mde_paired, mean_std, t_half_width, t_interval  # noqa: E402
from softclip.runfiles import eval_dir  # noqa: E402

#: Candidate designs: overrides on ``ablations/base.yaml --profile quick``.
CANDIDATES: dict[str, dict[str, str]] = {
    "vit-p8-160": {"model.name": "tiny-vit-32-p8", "train.steps": "160", "data.batch_size": "64",
                   "optim.lr": "5.0e-4", "optim.warmup_steps": "10"},
    "rn32-300": {"model.name": "tiny-rn-32", "train.steps": "300", "data.batch_size": "64",
                 "optim.lr": "5.0e-4", "optim.warmup_steps": "15"},
    "rn32-600": {"model.name": "tiny-rn-32", "train.steps": "600", "data.batch_size": "64",
                 "optim.lr": "5.0e-4", "optim.warmup_steps": "30"},
    "rn32-900": {"model.name": "tiny-rn-32", "train.steps": "900", "data.batch_size": "64",
                 "optim.lr": "5.0e-4", "optim.warmup_steps": "45"},
    "rn32-300-lr1e3": {"model.name": "tiny-rn-32", "train.steps": "300", "data.batch_size": "64",
                       "optim.lr": "1.0e-3", "optim.warmup_steps": "15"},
    "rn32-200-lr2e3": {"model.name": "tiny-rn-32", "train.steps": "200", "data.batch_size": "64",
                       "optim.lr": "2.0e-3", "optim.warmup_steps": "10"},
}
#: The quick data design with evaluation sets large enough that test-set sampling is not the noise floor.
EVAL_SETS = {"data.synth.n_zeroshot_per_class": "100", "data.synth.n_retrieval_images": "1000"}
METHODS: dict[str, dict[str, str]] = {
    "clip": {"loss.target": "hard", "loss.soft_weight": "0.0", "loss.re_weight": "0.0",
             "loss.image_source": "image", "loss.text_source": "text"},
    "oracle": {"loss.target": "oracle", "loss.image_source": "image", "loss.text_source": "text"},
}
#: Reported metrics: label -> (benchmark file, metric key).
METRICS = {
    "zero-shot top-1": ("zeroshot", "top1"),
    "colour acc": ("zeroshot", "colour_acc"),
    "shape acc": ("zeroshot", "shape_acc"),
    "RSUM": ("retrieval", "rsum"),
    "i2t sem. mAP": ("retrieval", "i2t_sem_map"),
    "t2i sem. mAP": ("retrieval", "t2i_sem_map"),
    "inst. mAP medium": ("instance", "map_medium"),
}
HEADLINE = ("zero-shot top-1", "RSUM", "i2t sem. mAP", "t2i sem. mAP")
#: the candidate that ablations/base.yaml's quick profile is (see choice_section)
CHOSEN = "rn32-300-lr1e3"
DEMO_RUNS = 20  # `make demo`: main + targets less raw self-similarity, 4 methods x 5 seeds
BASE = ["ablations/base.yaml", "--profile", "quick"]
RECORD = "power.json"


def overrides(mapping: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in mapping.items()]


def generate_data(root: Path, softclip: str) -> float:
    """Generate the data set once (cached by the generator's card); returns wall seconds."""
    t0 = time.perf_counter()
    cmd = [softclip, "data", "synth", "--out", str(root), *BASE[1:], "--workers", "2", *overrides(EVAL_SETS)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def read_metrics(run_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    eval_s = 0.0
    for bench in {b for b, _ in METRICS.values()} | {"copydays"}:
        doc = json.loads((eval_dir(run_dir) / f"{bench}.json").read_text())
        eval_s += float(doc.get("time_s", 0.0))
        for label, (b, key) in METRICS.items():
            if b == bench:
                out[label] = float(doc["metrics"][key])
    out["eval_s"] = eval_s
    return out


def run_all(jobs: list[tuple[str, str, int]], runs: Path, data_root: Path, softclip: str, n_jobs: int) -> None:
    """Train every (candidate, method, seed) not yet recorded, ``n_jobs`` processes at a time."""
    todo = [j for j in jobs if not (runs / j[0] / j[1] / f"s{j[2]}" / RECORD).exists()]
    running: dict[int, tuple[tuple[str, str, int], float, Path]] = {}
    while todo or running:
        while todo and len(running) < n_jobs:
            job = todo.pop(0)
            cand, method, seed = job
            run_dir = runs / cand / method / f"s{seed}"
            cmd = [softclip, "train", *BASE, "--run-dir", str(run_dir), f"name=power-{cand}-{method}-s{seed}",
                   f"seed={seed}", f"data.root={data_root}", "train.threads=1",
                   *overrides(EVAL_SETS), *overrides(CANDIDATES[cand]), *overrides(METHODS[method])]
            log = (runs / f"{cand}-{method}-s{seed}.log").open("w")
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            running[proc.pid] = (job, time.perf_counter(), run_dir)
            print(f"start {cand} {method} s{seed}", flush=True)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        job, t0, run_dir = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"power: run {run_dir} failed (exit {os.waitstatus_to_exitcode(status)}); "
                             f"see {runs}/{job[0]}-{job[1]}-s{job[2]}.log")
        record = {"candidate": job[0], "method": job[1], "seed": job[2], "wall_s": time.perf_counter() - t0,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "metrics": read_metrics(run_dir)}
        payload = json.dumps(record, indent=1).encode()
        atomic_write(run_dir / RECORD, lambda f, data=payload: f.write(data))
        print(f"done  {job[0]} {job[1]} s{job[2]}: {record['cpu_s']:.0f} CPU-s, "
              f"zero-shot {record['metrics']['zero-shot top-1']:.1f}", flush=True)


def summarize(records: list[dict], candidates: list[str]) -> dict[str, dict]:
    """Per candidate: CLIP mean/std, oracle − CLIP paired statistics, MDE at 5 and 10 seeds, cost."""
    summary: dict[str, dict] = {}
    for cand in candidates:
        by = {(r["method"], r["seed"]): r for r in records if r["candidate"] == cand}
        seeds = sorted({s for m, s in by if ("clip", s) in by and ("oracle", s) in by})
        if not seeds:
            continue
        rows = {}
        for label in METRICS:
            clip = np.array([by["clip", s]["metrics"][label] for s in seeds])
            oracle = np.array([by["oracle", s]["metrics"][label] for s in seeds])
            diff = oracle - clip
            n, mean_c, sd_c = mean_std(clip)
            _, mean_d, sd_d = mean_std(diff)
            low, high = t_interval(diff) if n >= 2 else (float("nan"), float("nan"))
            rows[label] = {"clip_mean": mean_c, "clip_sd": sd_c, "oracle_mean": float(oracle.mean()),
                           "diff_mean": mean_d, "diff_sd": sd_d, "diff_low": low, "diff_high": high,
                           "half_width_5": t_half_width(sd_d, 5), "mde_5": mde_paired(sd_d, 5),
                           "mde_10": mde_paired(sd_d, 10)}
        runs = [r for r in records if r["candidate"] == cand]
        summary[cand] = {"seeds": seeds, "overrides": CANDIDATES[cand], "metrics": rows,
                         "cpu_s": float(np.median([r["cpu_s"] for r in runs])),
                         "wall_s": float(np.median([r["wall_s"] for r in runs])),
                         "eval_s": float(np.median([r["metrics"]["eval_s"] for r in runs]))}
    return summary


def fmt(x: float, digits: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def choice_section(summary: dict) -> list[str]:
    """Why the quick profile is :data:`CHOSEN`, with its numbers and the benchmark goals it misses."""
    if CHOSEN not in summary:
        return []
    s, m = summary[CHOSEN], summary[CHOSEN]["metrics"]
    clear = [k for k in (*HEADLINE, "inst. mAP medium") if m[k]["diff_low"] > 0 or m[k]["diff_high"] < 0]
    cliff = {c: v["metrics"]["shape acc"]["clip_mean"] for c, v in summary.items()}
    reach = [c for c, v in cliff.items() if v >= 60]
    demo_min = DEMO_RUNS * s["cpu_s"] / 2 / 60
    reach_cost = ", ".join(f"{summary[c]['cpu_s']:.0f}" for c in reach) or "–"
    return ["## The quick profile", "",
            f"`ablations/base.yaml`'s quick profile is **{CHOSEN}** "
            f"({', '.join(f'{k}={v}' for k, v in s['overrides'].items())}) with the enlarged evaluation sets. Why: "
            f"plain CLIP learns colour to {fmt(m['colour acc']['clip_mean'])}% and shape to "
            f"{fmt(m['shape acc']['clip_mean'])} ± {fmt(m['shape acc']['clip_sd'])}% (chance 25%; the ViT design "
            "stalls near a third), with the lowest seed spread of the ModifiedResNet designs at its cost; the "
            f"oracle beats CLIP with a paired 95% interval clear of 0 on {', '.join(clear)}; one run costs "
            f"{s['cpu_s']:.0f} CPU-s. The learning rate was chosen on CLIP's learnability alone (shape accuracy and "
            "seed spread), never on a result of label smoothing or SoftCLIP.", "",
            "Goals it misses, with the nearest designs:",
            f"- CLIP shape ≥ 60%: {fmt(m['shape acc']['clip_mean'])}% here; only "
            f"{', '.join(reach) or 'none'} reaches it, at "
            f"{reach_cost} CPU-s per run.",
            f"- `make demo` ≤ 15 min: {DEMO_RUNS} runs × {s['cpu_s']:.0f} CPU-s on 2 cores ≈ {demo_min:.0f} min "
            "(the measured time is in the README).",
            f"- Half-width ≤ 1.0 on zero-shot / ≤ 3.0 on RSUM at 5 seeds: the oracle − CLIP sd(Δ) here implies "
            f"{fmt(m['zero-shot top-1']['half_width_5'], 1)} / {fmt(m['RSUM']['half_width_5'], 1)}; no design "
            "comes near, because CLIP's seed-to-seed spread (not test-set sampling) is the noise floor at this "
            "scale. The demo's SoftCLIP − CLIP intervals are reported as measured.", ""]


def write_report(out: Path, summary: dict, records: list[dict], data_s: float | None) -> None:
    lines = ["# SynthScenes power study: oracle − CLIP on candidate quick designs", "",
             "Generated by `python benchmarks/power.py` (issue #14). Each candidate trains plain CLIP and the "
             "oracle positive control on the same seeds and the same data (the quick data design, evaluation "
             f"sets enlarged: {', '.join(f'`{k}={v}`' for k, v in EVAL_SETS.items())}: 1,600 zero-shot images, "
             "1,000 retrieval images × 5 captions). Only these two methods are run: the benchmark is calibrated "
             "with them alone. One single-threaded process per run, two at a time on the 2-core machine "
             f"({platform.processor() or platform.machine()}); CPU-s from each process's rusage, evaluation "
             "included.", ""]
    if data_s is not None:
        lines += [f"Data generation (once, 2 workers, `softclip data synth` process included): {data_s:.0f} s wall.",
                  ""]
    lines += ["## Cost and CLIP's learnability", "",
              "| candidate | overrides | seeds | CPU-s / run | wall s / run | eval s / run | CLIP colour | "
              "CLIP shape | CLIP zero-shot | CLIP RSUM |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cand, s in summary.items():
        m = s["metrics"]
        ov = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in s["overrides"].items())
        lines.append(f"| {cand} | {ov} | {len(s['seeds'])} | {s['cpu_s']:.0f} | {s['wall_s']:.0f} | "
                     f"{s['eval_s']:.1f} | "
                     + " | ".join(f"{fmt(m[k]['clip_mean'])} ± {fmt(m[k]['clip_sd'])}"
                                  for k in ("colour acc", "shape acc", "zero-shot top-1", "RSUM")) + " |")
    lines += ["", *choice_section(summary), "## Power: oracle − CLIP, paired on seeds", "",
              "sd(Δ) is the std of the per-seed paired difference; half-width 5 the 95% t-interval half-width it "
              "implies at 5 seeds; MDE the minimum detectable paired effect at α = 0.05, power 0.8.", "",
              "| candidate | metric | CLIP | oracle | Δ [95% CI] | sd(Δ) | half-width 5 | MDE 5 seeds | "
              "MDE 10 seeds |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for cand, s in summary.items():
        for label in (*HEADLINE, "inst. mAP medium"):
            r = s["metrics"][label]
            lines.append(f"| {cand} | {label} | {fmt(r['clip_mean'])} ± {fmt(r['clip_sd'])} | "
                         f"{fmt(r['oracle_mean'])} | {fmt(r['diff_mean'], 2)} [{fmt(r['diff_low'], 2)}, "
                         f"{fmt(r['diff_high'], 2)}] | {fmt(r['diff_sd'], 2)} | {fmt(r['half_width_5'], 2)} | "
                         f"{fmt(r['mde_5'], 2)} | {fmt(r['mde_10'], 2)} |")
    lines += ["", "## Per run", "", "| candidate | method | seed | CPU-s | zero-shot | shape | RSUM | t2i sem. mAP |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (r["candidate"], r["method"], r["seed"])):
        m = r["metrics"]
        lines.append(f"| {r['candidate']} | {r['method']} | {r['seed']} | {r['cpu_s']:.0f} | "
                     f"{m['zero-shot top-1']:.1f} | {m['shape acc']:.1f} | {m['RSUM']:.1f} | {m['t2i sem. mAP']:.1f} |")
    text = "\n".join(lines) + "\n"
    atomic_write(out / "power.md", lambda f: f.write(text.encode()))
    doc = {"summary": summary, "records": records, "data_generation_s": data_s}
    atomic_write(out / "power.json", lambda f: f.write(json.dumps(doc, indent=1).encode()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default="vit-p8-160,rn32-300,rn32-600,rn32-300-lr1e3,rn32-200-lr2e3", help=f"comma list of {sorted(CANDIDATES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--runs", default="runs/power")
    p.add_argument("--data", default="data/synth-power")
    p.add_argument("--out", default="reports/synthscenes")
    p.add_argument("--report-only", action="store_true", help="train nothing: report the recorded runs")
    args = p.parse_args(argv)
    candidates = [c for c in args.candidates.split(",") if c]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise SystemExit(f"power: unknown candidate {unknown[0]!r}; known: {', '.join(sorted(CANDIDATES))}")
    seeds = [int(s) for s in args.seeds.split(",")]
    softclip = str(Path(sys.executable).with_name("softclip"))
    runs, out = ROOT / args.runs, ROOT / args.out
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    data_s = generate_data(ROOT / args.data, softclip)
    print(f"data ready in {data_s:.0f} s", flush=True)
    first = runs / "data_generation.json"  # the first (uncached) generation's time is the one worth reporting
    if not first.exists():
        first.write_text(json.dumps({"wall_s": data_s}))
    data_s = json.loads(first.read_text())["wall_s"]
    if not args.report_only:
        jobs = [(c, m, s) for c in candidates for s in seeds for m in METHODS]
        run_all(jobs, runs, ROOT / args.data, softclip, args.jobs)
    records = [json.loads(f.read_text()) for f in sorted(runs.glob(f"*/*/s*/{RECORD}"))]
    records = [r for r in records if r["candidate"] in candidates and (args.report_only or r["seed"] in seeds)]
    write_report(out, summarize(records, candidates), records, data_s)
    print(f"wrote {out / 'power.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
