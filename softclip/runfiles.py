"""The names inside a run folder, spelled once (a leaf module: everything may import it, it imports nothing).

``runs/<name>/`` holds ``config.yaml`` (the resolved config), ``meta.json`` (git SHA, versions, host, seed),
``metrics.jsonl`` (one line per log step), ``checkpoints/step_XXXXXXXX.pt`` (+ ``.json`` records), ``eval/``
(one result JSON per benchmark of the final checkpoint; other checkpoints' under ``eval/step_<N>/``),
``lock.json`` while a trainer owns it, ``run.json`` (the config it was started with, its identity) and
``done.json`` once finished.
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
ABLATION = "ablation.json"
RUN = "run.json"

#: What marks a folder as a trainer's run: ``run.json`` (the recorded identity, written first) or, for runs
#: made before it existed, ``meta.json``. A folder with neither is never written into nor cleared.
RUN_MARKERS = (RUN, META)


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def eval_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVAL
