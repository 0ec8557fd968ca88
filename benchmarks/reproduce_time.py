"""Wall time and peak memory of `softclip reproduce` (and so of `make demo`), with the time per training run.

Runs the command as a child process, samples the resident memory of its whole process tree from /proc every
second (the sum over processes, and the largest single process), then reads every run folder it produced:
training time = done.json ``finished`` − meta.json ``started``; evaluation time = the sum of ``time_s`` over
``eval/*.json``. Shared (alias) runs are counted once.

Run:     .venv/bin/python benchmarks/reproduce_time.py --name demo -- --profile quick --only main,targets \
             --out runs/reports/demo
         .venv/bin/python benchmarks/reproduce_time.py --name quick --summarize-only --wall 5400 \
             --peak-mib 2900 -- --profile quick      (summarise runs measured elsewhere, e.g. under /usr/bin/time)
Writes:  reports/perf/reproduce.json (one entry per --name, replaced on re-run) and reports/perf/reproduce.md
Runtime: that of the command (make demo ≈ 11 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "perf"


def _tree_rss_mib(root_pid: int) -> tuple[float, float]:
    """(sum, max) resident MiB over ``root_pid`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid and c not in tree]
        tree.update(children)
        frontier += children
    values = [rss.get(p, 0.0) for p in tree]
    return sum(values), max(values, default=0.0)


def run_measured(argv: list[str]) -> dict[str, float]:
    """Run ``softclip reproduce argv``; returns wall seconds, peak summed and single-process RSS (MiB)."""
    cmd = [str(ROOT / ".venv" / "bin" / "softclip"), "reproduce", *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    peak_sum = peak_one = 0.0
    while proc.poll() is None:
        total, largest = _tree_rss_mib(proc.pid)
        peak_sum, peak_one = max(peak_sum, total), max(peak_one, largest)
        time.sleep(1.0)
    if proc.returncode != 0:
        sys.exit(f"reproduce exited {proc.returncode}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_sum_mib": peak_sum, "peak_rss_process_mib": peak_one}


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def run_times(argv: list[str]) -> list[dict[str, object]]:
    """Per distinct run of the command's ablations: variant, training seconds, evaluation seconds."""
    sys.path.insert(0, str(ROOT))
    from softclip.ablate import dedupe, plan_jobs
    from softclip.reproduce import plan, select_parts

    args = argparse.ArgumentParser(add_help=False)
    args.add_argument("--profile", default="quick")
    args.add_argument("--only", default=None)
    known, _ = args.parse_known_args(argv)
    specs, _ = plan(known.profile, select_parts(known.only.split(",") if known.only else None))
    unique, _ = dedupe([j for s in specs for j in plan_jobs(s)])
    rows = []
    for job in unique:
        run = Path(job.run_dir)
        if not (run / "done.json").is_file():
            continue
        train_s = _stamp(json.loads((run / "done.json").read_text())["finished"]) - _stamp(
            json.loads((run / "meta.json").read_text())["started"]
        )
        eval_s = sum(json.loads(p.read_text()).get("time_s", 0.0) for p in (run / "eval").glob("*.json"))
        rows.append({"run": f"{job.meta['ablation']}/{job.variant}/s{job.seed}", "train_s": train_s, "eval_s": eval_s})
    return rows


def write(name: str, argv: list[str], measured: dict[str, float], rows: list[dict[str, object]]) -> None:
    path = OUT / "reproduce.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    train = [float(r["train_s"]) for r in rows]
    data[name] = {
        "command": "softclip reproduce " + " ".join(argv), "cpus": os.cpu_count(), **measured,
        "distinct_runs": len(rows), "train_s_mean": statistics.fmean(train) if train else None,
        "train_s_median": statistics.median(train) if train else None,
        "eval_s_mean": statistics.fmean(float(r["eval_s"]) for r in rows) if rows else None, "runs": rows,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    lines = ["# `softclip reproduce` wall time and memory", "",
             "Written by `benchmarks/reproduce_time.py`. Peak RSS: summed over the driver and its worker "
             "processes (sampled each second), and the largest single process.", "",
             "| name | command | CPUs | wall | distinct runs | train s/run (mean, median) | eval s/run | peak RSS sum | "
             "peak RSS process |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for key, e in data.items():
        lines.append(
            f"| {key} | `{e['command']}` | {e['cpus']} | {e['wall_s'] / 60:.1f} min | {e['distinct_runs']} | "
            f"{e['train_s_mean'] or 0:.0f}, {e['train_s_median'] or 0:.0f} | {e['eval_s_mean'] or 0:.1f} | "
            f"{e['peak_rss_sum_mib']:.0f} MiB | {e['peak_rss_process_mib']:.0f} MiB |"
        )
    lines += [""] + [f"- {key}: {e['note']}" for key, e in data.items() if e.get("note")]
    (OUT / "reproduce.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="entry name, e.g. demo or quick")
    p.add_argument("--summarize-only", action="store_true", help="do not run; read runs and the numbers given")
    p.add_argument("--wall", type=float, default=None, help="wall seconds measured elsewhere (--summarize-only)")
    p.add_argument("--peak-mib", type=float, default=None, help="peak summed RSS measured elsewhere")
    p.add_argument("--peak-process-mib", type=float, default=None, help="peak single-process RSS measured elsewhere")
    p.add_argument("--note", default="", help="how and where it was measured (shown under the table)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the arguments of softclip reproduce")
    a = p.parse_args()
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if a.summarize_only:
        measured = {"wall_s": a.wall or 0.0, "peak_rss_sum_mib": a.peak_mib or 0.0,
                    "peak_rss_process_mib": a.peak_process_mib or 0.0}  # fmt: skip
    else:
        measured = run_measured(argv)
    write(a.name, argv, {**measured, "note": a.note}, run_times(argv))
    print((OUT / "reproduce.md").read_text())


if __name__ == "__main__":
    main()
