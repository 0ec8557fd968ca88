"""Peak host memory and time of one exact search over a large gallery (rOxford/rParis + distractors shape).

Each measurement runs in a fresh process: draw ``n`` random unit vectors (float32 [n, d]) and ``q`` queries,
reset the peak-RSS mark (``/proc/self/clear_refs``, value 5), build ``GalleryIndex`` and search top-``k``. The
number that matters is the peak RSS above the gallery the caller already holds: ~0 when the search uses the
caller's array in place, ~1 gallery when the index keeps its own copy.

    python benchmarks/search_memory.py --n 200000 --d 1024 [--queries 70] [--k 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def unit_rows(rng: np.random.Generator, n: int, d: int, chunk: int = 65536) -> np.ndarray:
    """float32 [n, d] unit vectors, drawn in chunks so the draw never holds more than the result."""
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - lo), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo : lo + len(block)] = block
    return out


def measure(n: int, d: int, queries: int, k: int, seed: int = 0) -> dict:
    sys.path.insert(0, str(ROOT))
    from softclip.evaluation.search import GalleryIndex, SearchConfig

    rng = np.random.default_rng(seed)
    gallery = unit_rows(rng, n, d)
    xq = unit_rows(rng, queries, d)
    base_kib = _status_kib("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    index = GalleryIndex(gallery, SearchConfig(exact_max_gallery=max(n, 1)))
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(xq, k)
    t_search = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM")
    gib = 1024**2
    return {
        "n": n, "d": d, "queries": queries, "k": k, "gallery_gib": round(gallery.nbytes / 2**30, 3),
        "rss_before_gib": round(base_kib / gib, 3), "peak_rss_gib": round(peak_kib / gib, 3),
        "peak_above_gallery_gib": round((peak_kib - base_kib) / gib, 3), "peak_reset": reset,
        "build_s": round(t_build, 3), "search_s": round(t_search, 3), "threads": os.cpu_count(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--queries", type=int, default=70)
    p.add_argument("--k", type=int, default=100)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.n, args.d, args.queries, args.k)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
