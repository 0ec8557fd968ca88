"""SoftCLIP objective (fused and reference paths) vs open_clip's ClipLoss: forward + backward time and peak memory.

Goals: at N=1024, d=512 the full objective costs <= 1.3x ClipLoss; the fused path (``loss.impl: fused``, its
hand-written backward) stays only if, at N >= 4096, it is >= 1.3x faster or >= 1.5x leaner than the plain-autograd
reference (``loss.impl: reference``).

The full objective is the paper's default: self-similarity targets from separate side features (A, B of dim 256,
as ROI aggregates and tag embeddings would be), symmetric KL, the relation-enhanced term (β=0.3, τ=0.07, λ=1,
µ=0.5). ``clip_mode`` is the same objective at β=0, λ=µ=0, which must cost what ClipLoss costs. The contenders
run interleaved in one process (the order alternates every repeat), each call timed in wall-clock and CPU
seconds; the tables give medians, and the ratios are medians of paired ratios (each call against the ClipLoss
call next to it in time), which is robust to the load drifting on a shared machine. ``--threads 1 2`` repeats
everything per torch thread count. Page faults per call are reported too: on a CPU, fresh multi-megabyte blocks
are faulted in page by page, which is why the objective keeps its scratch blocks (losses.Workspace).

Peak memory: each contender runs alone in a fresh process (spawned), and the figure is its peak resident set
during two steps above the resident set it had with its inputs built (``ru_maxrss``), so it counts every
intermediate block the step keeps alive, autograd's saved tensors included.

Run:     .venv/bin/python benchmarks/objective_speed.py [--sizes 1024 4096 8192] [--dim 512] [--threads T]
Writes:  reports/perf/objective.json and reports/perf/objective.md
Runtime: ~10 min on a 2-core CPU at one thread (N=8192 dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softclip.objective import SoftCLIPObjective  # noqa: E402
from softclip.report.hardware import this_machine  # noqa: E402

SIDE_DIM = 256
REPEATS = {256: 40, 1024: 15, 4096: 5, 8192: 3}
GOAL_N, GOAL_RATIO = 1024, 1.3
FUSED_FROM_N, FUSED_SPEED, FUSED_MEMORY = 4096, 1.3, 1.5


def _inputs(n: int, d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "u": F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(),
        "v": F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(),
        "a": torch.randn(n, SIDE_DIM, generator=g),
        "b": torch.randn(n, SIDE_DIM, generator=g),
        "scale": torch.tensor(1 / 0.07, requires_grad=True),
    }


def contenders(x: dict[str, torch.Tensor]) -> dict[str, Callable[[], None]]:
    """name -> one forward + backward step."""
    clip, full, reference = ClipLoss(), SoftCLIPObjective(impl="fused"), SoftCLIPObjective(impl="reference")
    clip_mode = SoftCLIPObjective(beta=0.0, soft_weight=0.0, re_weight=0.0, impl="fused")

    def zero() -> None:
        for t in (x["u"], x["v"], x["scale"]):
            t.grad = None

    def run_clip() -> None:
        zero()
        clip(x["u"], x["v"], x["scale"]).backward()

    def run_full() -> None:
        zero()
        full(x["u"], x["v"], x["scale"], x["a"], x["b"])["loss"].backward()

    def run_reference() -> None:
        zero()
        reference(x["u"], x["v"], x["scale"], x["a"], x["b"])["loss"].backward()

    def run_clip_mode() -> None:
        zero()
        clip_mode(x["u"], x["v"], x["scale"])["loss"].backward()

    return {"open_clip_ClipLoss": run_clip, "softclip_full": run_full, "softclip_reference": run_reference,
            "softclip_clip_mode": run_clip_mode}  # fmt: skip


def _rss_kib() -> int:
    """Current resident set of this process in KiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kib() -> int:
    """Peak resident set (VmHWM) of this process in KiB since the last :func:`_reset_hwm`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    """Reset the peak resident set to the current one (Linux: '5' > /proc/self/clear_refs). ``ru_maxrss`` cannot
    be used: Linux carries it across fork and exec, so a child would report its parent's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_child(name: str, n: int, d: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    fn = contenders(_inputs(n, d))[name]
    _reset_hwm()
    before = _rss_kib()
    fn()
    fn()
    queue.put((_hwm_kib() - before) / 1024)


def peak_memory_mib(name: str, n: int, d: int, threads: int) -> float:
    """Peak resident MiB of two steps of ``name`` above its inputs, measured in a fresh spawned process."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(name, n, d, threads, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return float(value)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_size(n: int, d: int, repeats: int) -> dict:
    """Medians of wall / CPU milliseconds and page faults per call for every contender at batch size n."""
    fns = contenders(_inputs(n, d))
    for fn in fns.values():  # warm-up: allocator, BLAS, autograd
        fn()
        fn()
    samples = {name: {"wall_ms": [], "cpu_ms": [], "faults": []} for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            f0, c0, t0 = _faults(), time.process_time(), time.perf_counter()
            fns[name]()
            samples[name]["wall_ms"].append(1e3 * (time.perf_counter() - t0))
            samples[name]["cpu_ms"].append(1e3 * (time.process_time() - c0))
            samples[name]["faults"].append(_faults() - f0)
    res = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    for name in names:
        res[name]["peak_mib"] = peak_memory_mib(name, n, d, torch.get_num_threads())
    base = samples["open_clip_ClipLoss"]
    for name in names:
        for kind in ("wall", "cpu"):  # paired: each repeat against the ClipLoss call next to it in time
            ratios = [x / y for x, y in zip(samples[name][f"{kind}_ms"], base[f"{kind}_ms"], strict=True)]
            res[name][f"ratio_{kind}"] = statistics.median(ratios)
    return {"n": n, "d": d, "repeats": repeats, "results": res}


def remeasure_memory(out: Path) -> int:
    """Replace ``peak_mib`` of every row of ``out/objective.json`` with a fresh measurement; rewrite the report."""
    res = json.loads((out / "objective.json").read_text())
    for size in res["sizes"]:
        for name, row in size["results"].items():
            row["peak_mib"] = peak_memory_mib(name, size["n"], size["d"], size["threads"])
            print(f"N={size['n']} {name}: {row['peak_mib']:.0f} MiB", flush=True)
    res["memory_command"] = "python benchmarks/objective_speed.py --memory-only"
    (out / "objective.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, out / "objective.md")
    return 0


def write_markdown(res: dict, path: Path) -> None:
    lines = [
        "# SoftCLIP objective speed",
        "",
        f"Generated by `{res['command']}` on {res['cpu_model']} ({res['cpus']} CPUs; {res['platform']}; torch "
        f"{res['torch']}, open_clip {res['open_clip']}) in {res['total_s']:.0f} s. Load average {res['load_before']} "
        f"before, {res['load_after']} after: the machine is shared, so wall times are upper bounds; CPU seconds "
        "are given beside them." + (f" Peak memory re-measured by `{res['memory_command']}`."
                                    if res.get("memory_command") else ""),
        "",
        "Forward + backward per step, medians over interleaved repeats; ratios against open_clip's ClipLoss are "
        "medians of paired ratios. `softclip_full`: selfsim targets from side features of dim "
        f"{SIDE_DIM}, symkl, relation-enhanced term (β=0.3, τ=0.07, λ=1, µ=0.5). `softclip_clip_mode`: β=0, "
        "λ=µ=0 (ClipLoss's computation).",
        "",
        "| threads | N | d | contender | wall (ms) | CPU (ms) | peak MiB | page faults | ratio (wall) | ratio (CPU) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in res["sizes"]:
        for name, r in size["results"].items():
            lines.append(
                f"| {size['threads']} | {size['n']} | {size['d']} | {name} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | "
                f"{r['peak_mib']:.0f} | {r['faults']:.0f} | {r['ratio_wall']:.2f} | {r['ratio_cpu']:.2f} |"
            )
    goals = [s for s in res["sizes"] if s["n"] == GOAL_N]
    if goals:
        lines += ["", f"Goal at N={GOAL_N}: the full objective costs <= {GOAL_RATIO}x ClipLoss."]
        for size in goals:
            full = size["results"]["softclip_full"]
            verdict = "met" if full["ratio_wall"] <= GOAL_RATIO else "missed"
            lines.append(
                f"- {size['threads']} thread(s): {full['ratio_wall']:.2f}x wall, {full['ratio_cpu']:.2f}x CPU: {verdict}."
            )
    large = [s for s in res["sizes"] if s["n"] >= FUSED_FROM_N]
    if large:
        lines += ["", f"Fused vs reference (the fused path stays if, at N >= {FUSED_FROM_N}, it is >= {FUSED_SPEED}x "
                  f"faster or >= {FUSED_MEMORY}x leaner):"]  # fmt: skip
        for size in large:
            fused, ref = size["results"]["softclip_full"], size["results"]["softclip_reference"]
            speed = ref["ratio_wall"] / fused["ratio_wall"]
            lean = ref["peak_mib"] / max(fused["peak_mib"], 1e-9)
            keep = speed >= FUSED_SPEED or lean >= FUSED_MEMORY
            lines.append(f"- N={size['n']}, {size['threads']} thread(s): fused {speed:.2f}x faster (paired wall "
                         f"ratios), {lean:.2f}x leaner ({fused['peak_mib']:.0f} vs {ref['peak_mib']:.0f} MiB): "
                         f"{'pays' if keep else 'does not pay'}.")  # fmt: skip
    by_threads = {s["threads"]: s["results"]["open_clip_ClipLoss"]["wall_ms"] for s in goals}
    if len(by_threads) > 1 and by_threads[max(by_threads)] > by_threads[min(by_threads)]:
        lines += [
            "",
            f"On this machine ClipLoss itself is slower with {max(by_threads)} threads than with "
            f"{min(by_threads)} ({by_threads[max(by_threads)]:.0f} vs {by_threads[min(by_threads)]:.0f} ms at "
            f"N={GOAL_N}): the cores are oversubscribed, and every OpenMP region waits for its slowest thread. "
            "The full objective runs many more elementwise passes than ClipLoss (each its own region), so it "
            "suffers more from that; the single-thread rows measure the compute cost.",
        ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=None, help="per size (default: 15 / 5 / 3 by size)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[0], help="torch thread counts (0: torch's choice)"
    )
    parser.add_argument("--out", default=str(ROOT / "reports" / "perf"))
    parser.add_argument("--memory-only", action="store_true",
                        help="re-measure only the peak memory of an existing objective.json (same sizes and threads)")
    args = parser.parse_args(argv)
    if args.memory_only:
        return remeasure_memory(Path(args.out))
    t0, load_before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    default_threads = torch.get_num_threads()
    sizes = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for n in args.sizes:
            sizes.append(
                {
                    "threads": torch.get_num_threads(),
                    **time_size(n, args.dim, args.repeats or REPEATS.get(n, 10)),
                }
            )
            ratio = sizes[-1]["results"]["softclip_full"]["ratio_wall"]
            print(
                f"threads={torch.get_num_threads()} N={n}: softclip_full / ClipLoss = {ratio:.2f}x (wall)",
                flush=True,
            )
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    res = {
        "command": f"python benchmarks/objective_speed.py {shown}".strip(),
        "cpu_model": this_machine()["cpu"], "cpus": os.cpu_count(), "default_threads": default_threads,
        "platform": platform.platform(), "torch": torch.__version__, "open_clip": open_clip.__version__,
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "total_s": time.perf_counter() - t0, "goal": {"n": GOAL_N, "ratio": GOAL_RATIO}, "sizes": sizes,
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "objective.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, out / "objective.md")
    print((out / "objective.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
