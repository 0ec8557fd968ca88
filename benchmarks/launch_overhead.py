"""Launch overhead per trial, as a fraction of a smoke trial's time (goal: <= 5%).

For each launcher, a sweep of ``--n`` no-op trials (``trial: noop``: the full trial path — job start, storage
connection, heartbeats, tell — without training) runs with one worker; the overhead per trial is the sweep's
wall time divided by the number of trials. The smoke trial's time is measured once in-process (train + eval of
``ablations/base.yaml --profile smoke``), or given with ``--smoke-seconds``.

Run:     .venv/bin/python benchmarks/launch_overhead.py [--launchers processes,slurm] [--n 12]
                 [--smoke-seconds S]
Writes:  reports/perf/launch.json and reports/perf/launch.md
Runtime: ~1–2 min per launcher on a 2-core CPU, plus one smoke trial (~1 min); slurm needs .ci/slurm/up.sh.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sweep_file(folder: Path, name: str, launcher: str, n: int, trial: str, cluster: Path | None) -> Path:
    data = {
        "name": name, "base": str(ROOT / "ablations" / "base.yaml"), "trial": trial,
        "space": {"loss.beta": {"type": "float", "low": 0.1, "high": 0.5}},
        "objective": {"metric": "noop/value" if trial == "noop" else "retrieval/rsum"},
        "sampler": {"name": "random", "seed": 0}, "n_trials": n, "output_dir": str(folder / "runs"),
        "launcher": {"name": launcher, "workers": 1, **({"cluster": str(cluster)} if cluster else {})},
    }  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def uses_cluster(launcher: str) -> bool:
    from softclip.launch import uses_cluster as takes_cluster

    return takes_cluster(launcher)


def timed_sweep(path: Path, profile: str = "smoke") -> tuple[float, dict[str, int]]:
    from softclip.sweep import load_sweep, run_sweep

    spec = load_sweep(path, profile)
    t0 = time.perf_counter()
    result = run_sweep(spec)
    return time.perf_counter() - t0, result.counts


def slurm_cluster(folder: Path) -> Path:
    data = yaml.safe_load((ROOT / "clusters" / "local.yaml").read_text())
    data["folder"] = str(folder / "submitit")
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def slurm_up() -> bool:
    try:
        return "UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launchers", default="processes,slurm")
    parser.add_argument("--n", type=int, default=4, help="no-op trials per launcher")
    parser.add_argument("--smoke-seconds", type=float, default=None, help="skip measuring the smoke trial")
    parser.add_argument("--out", default=str(ROOT / "reports" / "perf"))
    args = parser.parse_args(argv)
    out: dict = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}, "n": args.n}
    with tempfile.TemporaryDirectory(prefix="softclip-launch-") as tmp:
        folder = Path(tmp)
        if args.smoke_seconds is None:
            secs, counts = timed_sweep(sweep_file(folder, "smoke", "inprocess", 1, "train", None))
            out["smoke_trial_s"], out["smoke_counts"] = secs, counts
        else:
            out["smoke_trial_s"] = args.smoke_seconds
        out["launchers"] = {}
        for launcher in args.launchers.split(","):
            if launcher.startswith("slurm") and not slurm_up():
                out["launchers"][launcher] = {"skipped": "SLURM cluster not up (bash .ci/slurm/up.sh)"}
                continue
            cluster = slurm_cluster(folder) if uses_cluster(launcher) else None
            inproc, _ = timed_sweep(sweep_file(folder, f"base-{launcher}", "inprocess", args.n, "noop", None))
            secs, counts = timed_sweep(sweep_file(folder, f"noop-{launcher}", launcher, args.n, "noop", cluster))
            one, _ = timed_sweep(sweep_file(folder, f"one-{launcher}", launcher, 1, "noop", cluster))
            inproc_one, _ = timed_sweep(sweep_file(folder, f"base1-{launcher}", "inprocess", 1, "noop", None))
            per_trial = (secs - inproc) / args.n
            # marginal cost of one more trial once the launcher runs (worker processes started, torch imported)
            marginal = ((secs - inproc) - (one - inproc_one)) / max(args.n - 1, 1)
            out["launchers"][launcher] = {
                "sweep_s": round(secs, 2), "inprocess_sweep_s": round(inproc, 2), "counts": counts,
                "overhead_per_trial_s": round(per_trial, 2),
                "fraction_of_smoke_trial": round(per_trial / out["smoke_trial_s"], 4),
                "startup_s": round((one - inproc_one) - marginal, 2), "marginal_per_trial_s": round(marginal, 2),
                "marginal_fraction_of_smoke_trial": round(marginal / out["smoke_trial_s"], 4),
            }  # fmt: skip
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "launch.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Launch overhead per trial", "",
             f"Smoke trial (train + eval, in-process): {out['smoke_trial_s']:.1f} s; {args.n} no-op trials per "
             "launcher, one worker; overhead = (launcher sweep − in-process sweep) / trials. Goal ≤ 5%.", "",
             "Startup: once per sweep (worker processes, first torch import); marginal: each further trial.", "",
             "| launcher | overhead / trial (s) | fraction of a smoke trial | startup (s) | marginal / trial (s) | "
             "marginal fraction |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in out["launchers"].items():
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | | |")
        else:
            lines.append(f"| {name} | {row['overhead_per_trial_s']:.2f} | {100 * row['fraction_of_smoke_trial']:.1f}% | "
                         f"{row['startup_s']:.2f} | {row['marginal_per_trial_s']:.2f} | "
                         f"{100 * row['marginal_fraction_of_smoke_trial']:.1f}% |")
    (dest / "launch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
