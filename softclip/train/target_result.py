"""The run's target precision as a result file: ``eval/target.json`` in the evaluation results' format.

Every SynthScenes run with a soft target logs ``target_precision_i2t``, ``target_precision_t2i`` and
``target_true_share`` at each log step (:mod:`softclip.objective.precision`). At the end of training the
step-average of those logged values (over the log steps of ``metrics.jsonl``, each step once: a resumed run
drops the lines it redoes) is written as benchmark ``target`` with metrics ``precision`` (mean of the two
directions), ``precision_i2t``, ``precision_t2i`` and ``true_share``, so ``softclip report`` reads them as
``target/precision`` etc. A run without the diagnostics (hard targets: no off-diagonal mass; data without
scene annotations) writes no file: there is no precision to report, and a missing result is not a number.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from softclip import runfiles
from softclip.atomic import write_json
from softclip.train.metrics import read_metrics

BENCHMARK = "target"
#: metrics.jsonl key -> result metric key
KEYS = {"target_precision_i2t": "precision_i2t", "target_precision_t2i": "precision_t2i",
        "target_true_share": "true_share"}  # fmt: skip


def step_averages(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each logged diagnostic over the train records holding a finite value; ``precision`` = the mean
    of the two directions. Empty when no record holds them."""
    last: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") == "train" and isinstance(r.get("step"), int):
            last[r["step"]] = r  # a step logged twice (a torn resume) counts once
    out: dict[str, float] = {}
    for key, name in KEYS.items():
        values = [float(r[key]) for r in last.values() if isinstance(r.get(key), int | float)]
        values = [v for v in values if math.isfinite(v)]
        if values:
            out[name] = sum(values) / len(values)
    if "precision_i2t" in out and "precision_t2i" in out:
        out["precision"] = 0.5 * (out["precision_i2t"] + out["precision_t2i"])
    return out if "precision" in out else {}


def write_target_result(run_dir: Path, config_hash: str, step: int) -> Path | None:
    """Write ``eval/target.json`` from ``metrics.jsonl``; returns its path, or None when nothing was logged."""
    records = read_metrics(run_dir / runfiles.METRICS)
    metrics = step_averages(records)
    if not metrics:
        return None
    meta_path = run_dir / runfiles.META
    try:
        git_sha = json.loads(meta_path.read_text()).get("git_sha") if meta_path.is_file() else None
    except (OSError, ValueError):
        git_sha = None
    n_steps = sum(
        1 for r in records if r.get("kind") == "train" and r.get("target_precision_i2t") is not None
    )
    record = {
        "run": run_dir.name, "checkpoint": f"step_{step:08d}", "benchmark": BENCHMARK, "task": "target_precision",
        "protocol": {"source": runfiles.METRICS, "average": "log steps", "log_steps": n_steps},
        "metrics": dict(sorted(metrics.items())), "config_hash": config_hash, "git_sha": git_sha,
        "n_items": n_steps, "time_s": 0.0, "suite": None, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    path = runfiles.eval_dir(run_dir) / f"{BENCHMARK}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return path
