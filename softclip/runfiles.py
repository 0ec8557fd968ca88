"""The names inside a run folder, spelled once (a leaf module: everything may import it, it imports nothing).

``runs/<name>/`` holds ``config.yaml`` (the resolved config), ``meta.json`` (git SHA, versions, host, seed),
``metrics.jsonl`` (one line per log step), ``checkpoints/step_XXXXXXXX.pt`` (+ ``.json`` records), ``eval/``
(one result JSON per benchmark of the final checkpoint; other checkpoints' under ``eval/step_<N>/``),
``lock.json`` while a trainer owns it, and ``done.json`` once finished. An ablation or sweep folder holds
``manifest.json``: which run folders it uses, as (variant, seed, run folder, ...) records.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
META = "meta.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
DONE = "done.json"
LOCK = "lock.json"
ABLATION = "ablation.json"  # written beside runs before manifests; still read by the report
MANIFEST = "manifest.json"  # an ablation's or sweep's list of the runs it uses
POOL = "pool.json"  # marks the folder of run folders named by identity (the manifests point into it)

#: What marks a folder as a run (``--overwrite`` refuses to clear a folder holding none of them).
RUN_MARKERS = (CONFIG, DONE, METRICS, CHECKPOINTS)


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def eval_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVAL
