"""Pruning benchmark: a seeded TPE sweep with the median and hyperband pruners vs none.

Measures, per pruner, the total training steps spent by all trials (a pruned trial counts the steps it ran)
and the best objective value reached. Goal: >= 30% fewer steps than no pruning at an equal best value.
Uses the real trainer and evaluation (retrieval RSUM on SynthScenes).

Run:     .venv/bin/python benchmarks/pruning.py [--profile quick] [--trials 16] [--steps 1500] [--eval-every 250]
                 [--pruners none,median,hyperband] [--launcher inprocess] [--workers 1]
Writes:  reports/perf/pruning.json and reports/perf/pruning.md (with the exact settings used)
Runtime: 3 × 16 quick trials: hours on a 2-core CPU; reduce with --steps/--trials/--profile smoke.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRUNER_OPTIONS = {
    "none": {},
    "median": {"n_startup_trials": 4},
    "hyperband": {"reduction_factor": 3},
}


def sweep_file(folder: Path, pruner: str, args: argparse.Namespace) -> Path:
    options = dict(PRUNER_OPTIONS[pruner])
    if pruner == "median":
        options.update(n_warmup_steps=args.eval_every, n_startup_trials=args.startup)
    if pruner == "hyperband":
        options.update(min_resource=args.eval_every, max_resource=args.steps)
    data = {
        "name": f"pruning-{pruner}", "base": str(ROOT / "ablations" / "base.yaml"),
        "overrides": {"train.steps": args.steps, "train.eval_every": args.eval_every,
                      "train.ckpt_every": args.steps, "optim.warmup_steps": max(1, args.steps // 15)},
        "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9},
                  "loss.tau": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
                  "loss.soft_weight": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
                  "loss.re_weight": {"type": "float", "low": 0.0, "high": 1.0}},
        "objective": {"metric": args.metric, "direction": "maximize"},
        "sampler": {"name": "tpe", "seed": args.seed, "options": {"n_startup_trials": args.startup}},
        "pruner": {"name": pruner, "options": options}, "n_trials": args.trials,
        "output_dir": str(folder), "heartbeat_interval": 60,
    }  # fmt: skip
    path = folder / f"pruning-{pruner}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def measure(path: Path, args: argparse.Namespace) -> dict:
    from softclip.sweep import load_sweep, open_study, run_sweep

    spec = load_sweep(path, args.profile)
    t0 = time.perf_counter()
    run_sweep(spec, launcher=args.launcher, workers=args.workers)
    wall = time.perf_counter() - t0
    trials = [t for t in open_study(spec).trials if t.state.name in ("COMPLETE", "PRUNED")]
    steps = sum(args.steps if t.state.name == "COMPLETE" else max(t.intermediate_values, default=0) for t in trials)
    complete = [t.values[0] for t in trials if t.state.name == "COMPLETE"]
    return {"total_steps": steps, "best": max(complete) if complete else None, "wall_s": round(wall, 1),
            "complete": len(complete), "pruned": len(trials) - len(complete)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--metric", default="retrieval/rsum")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup", type=int, default=4, help="median pruner: trials before it prunes")
    parser.add_argument("--pruners", default="none,median,hyperband")
    parser.add_argument("--launcher", default="inprocess")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--folder", default=str(ROOT / "runs" / "bench-pruning"))
    parser.add_argument("--out", default=str(ROOT / "reports" / "perf"))
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    results = {p: measure(sweep_file(folder, p, args), args) for p in args.pruners.split(",")}
    base = results.get("none")
    for row in results.values():
        if base and base["total_steps"]:
            row["steps_saved"] = round(1 - row["total_steps"] / base["total_steps"], 3)
    out = {"settings": vars(args), "results": results}
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "pruning.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Pruning: total training steps and best value per pruner", "",
             f"TPE (seed {args.seed}), {args.trials} trials, profile {args.profile}, {args.steps} steps per trial, "
             f"evaluation every {args.eval_every} steps, objective {args.metric} (max), launcher {args.launcher} "
             f"x{args.workers}, {args.startup} start-up trials. Goal: ≥ 30% fewer steps "
             "than no pruning at an equal best value.", "",
             "| pruner | total steps | saved vs none | best | complete | pruned | wall (s) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        best = f"{r['best']:.2f}" if r["best"] is not None else "-"
        saved = f"{100 * r['steps_saved']:.0f}%" if "steps_saved" in r else "-"
        lines.append(f"| {name} | {r['total_steps']} | {saved} | {best} | {r['complete']} | {r['pruned']} | {r['wall_s']} |")
    (dest / "pruning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
