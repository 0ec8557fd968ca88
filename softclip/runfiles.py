"""The names inside a run folder, spelled once, and the reader of ``ablation.json`` (a leaf module: everything
may import it; it imports only the error root).

``runs/<name>/`` holds ``config.yaml`` (the resolved config), ``meta.json`` (git SHA, versions, host, seed),
``metrics.jsonl`` (one line per log step), ``checkpoints/step_XXXXXXXX.pt`` (+ ``.json`` records), ``eval/``
(one result JSON per benchmark of the final checkpoint; other checkpoints' under ``eval/step_<N>/``),
``lock.json`` while a trainer owns it, ``run.json`` (the config it was started with, its identity) and
``done.json`` once finished. An ablation or sweep folder holds ``manifest.json``: which run folders it uses, as
(variant, seed, run folder, ...) records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from softclip.errors import SoftclipError

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
RUN = "run.json"

#: What marks a folder as a trainer's run: ``run.json`` (the recorded identity, written first) or, for runs
#: made before it existed, ``meta.json``. A folder with neither is never written into nor cleared.
RUN_MARKERS = (RUN, META)


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def eval_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EVAL


class RunFileError(SoftclipError):
    """A file of a run folder that exists but cannot be used (damaged, wrong shape); the message names it."""


#: ``ablation.json`` keys and their types (written by ``softclip.ablate``; ``label``, ``factors`` etc. optional).
ABLATION_KEYS: dict[str, type | tuple[type, ...]] = {"ablation": str, "variant": str, "seed": int, "label": str,
                                                      "factors": dict, "order": int, "baseline": (str, type(None))}  # fmt: skip


def read_ablation_meta(path: str | Path) -> dict[str, Any]:
    """``ablation.json`` parsed and checked, so a damaged one is an error naming it, never a phantom ablation.

    Raises:
        RunFileError: unreadable or invalid JSON, not an object, ``ablation`` / ``variant`` missing, or a key of
            the wrong type.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunFileError(f"{path} is damaged ({type(err).__name__}: {err}); re-run the ablation to rewrite it, "
                           "or remove it to read the run by its folder layout") from None  # fmt: skip
    if not isinstance(meta, dict):
        raise RunFileError(f"{path} is damaged: a JSON object was expected, found {type(meta).__name__}")
    missing = [k for k in ("ablation", "variant") if not meta.get(k)]
    if missing:
        raise RunFileError(f"{path} is damaged: {', '.join(missing)} missing")
    for key, kind in ABLATION_KEYS.items():
        value = meta.get(key)
        if key in meta and (not isinstance(value, kind) or isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise RunFileError(f"{path} is damaged: {key}={value!r} has the wrong type ({names} expected)")
    return meta
