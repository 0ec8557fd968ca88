"""The run folder: one owner, and only runs. Refuse finished runs, folders that are not runs and runs of another
config; clear on ``overwrite``; pick the checkpoint to resume.

``runs/<name>/`` holds ``run.json`` (the config the run was started with: its identity, written first),
``config.yaml``, ``meta.json``, ``metrics.jsonl``, ``checkpoints/``, ``eval/`` and, once finished, ``done.json``.
A trainer writes into a folder only when it is empty (or new) or holds a run of the same identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from softclip import checkpoint as ckpt
from softclip.atomic import write_json
from softclip.config import Config, ConfigError, read_yaml, save_config
from softclip.errors import SoftclipError
from softclip.identity import RESUME_FREE_KEYS, SPEED_KEYS, flatten
from softclip.runfiles import CHECKPOINTS, CONFIG, DONE, EVAL, LOCK, META, METRICS, RUN, RUN_MARKERS  # noqa: F401 - re-exported
from softclip.train.errors import RunFolderError

log = logging.getLogger("softclip.train")

#: Keys a run folder's owner may change between restarts: where it lives, how it launches and evaluates, and the
#: implementation knobs that change speed, not results (softclip.identity).
FREE_KEYS = (*RESUME_FREE_KEYS, *SPEED_KEYS)


class RunFinishedError(SoftclipError, FileExistsError):
    """The run folder holds a finished run and ``overwrite`` was not asked for."""


def config_diff(
    saved: dict[str, Any], current: dict[str, Any], free: tuple[str, ...] = FREE_KEYS
) -> list[str]:
    """``key: old -> new`` for every dotted key that differs, except those under ``free``."""
    a, b = flatten(saved), flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if _is_free(key, free):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def _is_free(key: str, free: tuple[str, ...]) -> bool:
    return any(key == f or key.startswith(f + ".") for f in free)


def identity(config: dict[str, Any]) -> str:
    """Hash of a resolved config without the keys a run may change between restarts (:data:`FREE_KEYS`)."""
    flat = {k: v for k, v in flatten(config).items() if not _is_free(k, FREE_KEYS)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else \
            yaml.safe_load(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as err:
        raise RunFolderError(f"{path} ({what}) is unreadable: {type(err).__name__}: {err}") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} ({what}) is not a mapping")
    return data


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a run folder's run was started with: ``run.json``'s, or (runs from before ``run.json``)
    ``config.yaml`` beside a ``meta.json``; None for a folder that holds no run."""
    record = run_dir / RUN
    if record.is_file():
        config = _read_mapping(record, "the run's recorded identity").get("config")
        if not isinstance(config, dict):
            raise RunFolderError(f"{record} (the run's recorded identity) holds no config")
        return config
    if (run_dir / META).is_file():
        if not (run_dir / CONFIG).is_file():
            raise RunFolderError(f"{run_dir} holds a run ({META}) without its {CONFIG}; restore it or choose "
                                 "another --run-dir")  # fmt: skip
        return _read_mapping(run_dir / CONFIG, "the run's config")
    return None


def foreign_contents(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than the lock (and the lock's temporary files); [] when it does not exist."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK and not p.name.startswith(f".{LOCK}."))


def _listing(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_owner(run_dir: Path, cfg: Config | None) -> None:
    """Refuse a folder that is neither empty nor a run of ``cfg``'s identity (finished or not; ``cfg`` None:
    any run, as ``--overwrite`` replaces it); reads only.

    Raises:
        RunFolderError: the folder holds files but no run (``run.json`` / ``meta.json``), exit code 2.
        ConfigError: it holds a run of another identity (the differing keys are named).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is a file, not a folder; choose a new or empty folder for --run-dir")
    names = foreign_contents(run_dir)
    if not names:
        return
    if not any((run_dir / m).is_file() for m in RUN_MARKERS):
        raise RunFolderError(
            f"{run_dir} is not empty and holds no run ({' or '.join(RUN_MARKERS)} missing): it holds "
            f"{_listing(names)}; nothing was written. Choose a new or empty --run-dir"
        )
    if cfg is not None:
        check_resumable(run_dir, cfg)


def check_resumable(run_dir: Path, cfg: Config) -> None:
    """Raise ConfigError naming the differing keys when ``cfg`` differs from the run recorded in ``run_dir``."""
    saved = recorded_config(Path(run_dir))
    if saved is None:
        return
    diffs = config_diff(saved, cfg.to_dict())
    if diffs:
        raise ConfigError(
            f"{run_dir} holds a run with a different config, so it cannot be resumed; differing keys: "
            + "; ".join(diffs)
            + ". Pass --overwrite to start it again, or choose another --run-dir"
        )


def check_unedited(target: str | Path) -> None:
    """Refuse to evaluate a run whose ``config.yaml`` was edited after it was started (non-free keys).

    Results are filed under the hash of ``config.yaml``; an edited one would label the weights with a config
    they were not trained with. ``target`` is a run folder or a checkpoint inside one; runs from before
    ``run.json`` are not checked (nothing recorded to compare with).
    """
    target = Path(target)
    run_dir = target if target.is_dir() else target.parent
    if not target.is_dir() and target.parent.name == CHECKPOINTS:
        run_dir = target.parent.parent
    if not (run_dir / RUN).is_file() or not (run_dir / CONFIG).is_file():
        return
    diffs = config_diff(recorded_config(run_dir) or {}, _read_mapping(run_dir / CONFIG, "the run's config"))
    if diffs:
        raise ConfigError(
            f"{run_dir / CONFIG} was edited after the run was trained, so its results would be filed under a "
            f"config the weights were not trained with; differing keys (recorded in {run_dir / RUN} -> now): "
            + "; ".join(diffs)
            + ". Restore the file, or train the edited config as a new run"
        )


def _clear(run_dir: Path) -> None:
    """Empty the run folder for ``--overwrite``, keeping the lock that the caller holds."""
    names = foreign_contents(run_dir)
    if names and not any((run_dir / m).is_file() for m in RUN_MARKERS):
        raise RunFolderError(f"refusing to overwrite {run_dir}: it is not empty and holds no run "
                             f"({' or '.join(RUN_MARKERS)} missing); it holds {_listing(names)}")  # fmt: skip
    for name in names:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_record(run_dir: Path, cfg: Config) -> None:
    """``run.json``: the config (and identity) the run is started with; written once, before anything else."""
    data = cfg.to_dict()
    write_json(run_dir / RUN, {"format": 1, "identity": identity(data), "config_hash": cfg.hash(), "config": data})


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
        RunFolderError: the folder holds files but no run (never written into, nor cleared by ``overwrite``).
        ConfigError: a run of another config is there, finished or not (the message lists the keys).
    """
    if run_dir.exists() and overwrite:
        _clear(run_dir)
    else:
        check_owner(run_dir, cfg)
        if (run_dir / DONE).is_file():
            raise RunFinishedError(
                f"{run_dir} holds a finished run ({DONE}); pass --overwrite to train it again "
                "or choose another --run-dir"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / RUN).is_file():
        write_record(run_dir, cfg)
    folder = run_dir / CHECKPOINTS
    resume = ckpt.latest_valid(folder)
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


def expected_benchmarks(suite: str) -> list[str]:
    """Benchmark names of an evaluation suite (its result files are ``eval/<benchmark>.json``)."""
    from softclip.evaluation import read_suite

    spec, _ = read_suite(suite)
    return list(spec.benchmarks)


def is_finished(run_dir: str | Path, suite: str, config: dict[str, Any] | None = None) -> bool:
    """``done.json`` present, a result ``eval/<benchmark>.json`` for every benchmark of the suite and, when
    ``config`` is given, the run's ``config.yaml`` equal to it (up to where the run lives and launches)."""
    run_dir = Path(run_dir)
    if not (run_dir / DONE).is_file():
        return False
    if config is not None and (not (run_dir / CONFIG).is_file() or config_diff(read_yaml(run_dir / CONFIG), config)):
        return False
    return all((run_dir / EVAL / f"{name}.json").is_file() for name in expected_benchmarks(suite))
