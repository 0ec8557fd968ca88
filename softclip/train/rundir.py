"""The run folder: refuse finished runs, clear on ``overwrite``, pick the checkpoint to resume, check configs.

``runs/<name>/`` holds ``config.yaml``, ``meta.json``, ``metrics.jsonl``, ``checkpoints/``, ``eval/``
and, once finished, ``done.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from softclip import checkpoint as ckpt
from softclip.atomic import write_json
from softclip.config import Config, ConfigError, save_config
from softclip.errors import SoftclipError
from softclip.identity import RESUME_FREE_KEYS, flatten  # noqa: F401 - RESUME_FREE_KEYS re-exported
from softclip.runfiles import CHECKPOINTS, CONFIG, DONE, EVAL, LOCK, META, METRICS, RUN_MARKERS  # noqa: F401 - re-exported

log = logging.getLogger("softclip.train")

# Keys that may change between a run and its resumption: where it lives and how it is launched or evaluated.
class RunFinishedError(SoftclipError, FileExistsError):
    """The run folder holds a finished run and ``overwrite`` was not asked for."""


def config_diff(
    saved: dict[str, Any], current: dict[str, Any], free: tuple[str, ...] = RESUME_FREE_KEYS
) -> list[str]:
    """``key: old -> new`` for every dotted key that differs, except those under ``free``."""
    a, b = flatten(saved), flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == f or key.startswith(f + ".") for f in free):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def check_resumable(run_dir: Path, cfg: Config) -> None:
    """Raise ConfigError naming the differing keys when ``cfg`` differs from the run's ``config.yaml``."""
    path = run_dir / CONFIG
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    diffs = config_diff(saved, cfg.to_dict())
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a run with a different config, so it cannot be resumed; differing keys: "
            + "; ".join(diffs)
            + ". Pass --overwrite to start it again, or choose another --run-dir"
        )


def _clear(run_dir: Path) -> None:
    """Empty the run folder for ``--overwrite``, keeping the lock that the caller holds."""
    contents = [p for p in run_dir.iterdir() if p.name != LOCK]
    if contents and not any((run_dir / m).exists() for m in RUN_MARKERS):
        raise FileExistsError(f"refusing to overwrite {run_dir}: it is not empty and holds no run")
    for path in contents:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _set_aside_bad(folder: Path, keep: Path | None) -> None:
    """Rename checkpoints newer than ``keep`` that failed verification (so pruning never favours them)."""
    for path in ckpt.list_checkpoints(folder):
        if keep is None or ckpt.CKPT_RE.match(path.name).group(1) > ckpt.CKPT_RE.match(keep.name).group(1):
            for p in (path, ckpt.record_path(path)):
                if p.exists():
                    p.rename(p.with_name(p.name + ".bad"))
            log.warning("set aside unusable checkpoint %s (renamed to *.bad)", path)


def prepare(run_dir: Path, cfg: Config, overwrite: bool) -> Path | None:
    """Make ``run_dir`` ready (rank 0 only); returns the checkpoint to resume from, if any.

    Raises:
        RunFinishedError: a finished run without ``overwrite``.
        ConfigError: resuming with a different config (the message lists the keys).
    """
    if run_dir.exists() and overwrite:
        _clear(run_dir)
    elif (run_dir / DONE).is_file():
        raise RunFinishedError(
            f"{run_dir} holds a finished run ({DONE}); pass --overwrite to train it again "
            "or choose another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = run_dir / CHECKPOINTS
    resume = ckpt.latest_valid(folder)
    if resume is not None:
        check_resumable(run_dir, cfg)
    _set_aside_bad(folder, resume)
    folder.mkdir(exist_ok=True)
    (run_dir / EVAL).mkdir(exist_ok=True)
    save_config(cfg, run_dir / CONFIG)
    return resume


def write_meta(run_dir: Path, meta: dict[str, Any], resumed_step: int | None) -> None:
    """Write ``meta.json``; a resumed run keeps the original and appends to its ``resumes`` list."""
    path = run_dir / META
    if resumed_step is not None and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        old.setdefault("resumes", []).append({"step": resumed_step, **meta})
        meta = old
    write_json(path, meta)


def write_done(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(run_dir / DONE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary})
