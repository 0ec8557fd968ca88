"""Atomic, verified checkpoints with RNG capture, and the fallback to an older one when the newest is bad.

A checkpoint is two files in ``checkpoints/``: ``step_00000100.pt`` (``torch.save`` of plain tensors, numbers,
strings, lists and dicts only, so ``torch.load(weights_only=True)`` reads it) and ``step_00000100.json``
(step, byte size and SHA-256 of the ``.pt``). Each is written to a temporary file, flushed, fsynced and moved
into place with ``os.replace``, then the folder is fsynced; the ``.json`` is written last, so a checkpoint
without one (a crash between the two) counts as incomplete. Loading verifies size and hash before unpickling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from softclip.atomic import atomic_write, fsync_dir
from softclip.errors import SoftclipError

log = logging.getLogger("softclip.train")

CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")
BEST_NAME = "best.pt"


class CheckpointError(SoftclipError, RuntimeError):
    """A checkpoint that is missing its record, truncated, corrupt or unreadable."""


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def record_path(path: str | Path) -> Path:
    """The ``.json`` record beside a ``.pt`` checkpoint."""
    return Path(path).with_suffix(".json")


class _HashingWriter:
    """File wrapper that hashes and counts what passes through ``write``."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0
        self.error: OSError | None = None  # the OS's error, which torch's zip writer replaces by its own

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += view.nbytes
        try:
            return self.f.write(view)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Write ``state`` atomically to ``path`` plus its ``.json`` record; returns the record.

    Args:
        state: plain data (tensors, numbers, strings, None, lists, tuples, dicts) with an int ``step``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: BinaryIO) -> _HashingWriter:
        writer = _HashingWriter(f)
        try:
            torch.save(state, writer)
        except RuntimeError:  # a full disk reads "unexpected pos 240832 vs 240720": raise what the OS said
            if writer.error is not None:
                raise writer.error from None
            raise
        return writer

    writer = atomic_write(path, write)
    record = {
        "file": path.name,
        "step": int(state.get("step", -1)),
        "bytes": writer.size,
        "sha256": writer.sha.hexdigest(),
    }
    atomic_write(record_path(path), lambda f: f.write(json.dumps(record, indent=1).encode()))
    fsync_dir(path.parent)
    return record


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` has its record and matches its size and hash; returns the record."""
    path = Path(path)
    rec_path = record_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if not rec_path.is_file():
        raise CheckpointError(f"{path}: no {rec_path.name} record (the save did not complete)")
    try:
        record = json.loads(rec_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{rec_path}: unreadable record ({err})") from None
    size = path.stat().st_size
    if size != record.get("bytes"):
        raise CheckpointError(f"{path}: {size} bytes, the record says {record.get('bytes')} (truncated?)")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha.update(chunk)
    if sha.hexdigest() != record.get("sha256"):
        raise CheckpointError(f"{path}: SHA-256 mismatch (corrupt)")
    return record


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", verify: bool = True
) -> dict[str, Any]:
    """Verify (optionally) and load a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: when the record, size, hash or unpickling fails.
    """
    if verify:
        verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged zip archives
        raise CheckpointError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from None


def weights_mismatch(expected: dict[str, Any], weights: dict[str, Any]) -> str | None:
    """The first difference between a model's ``state_dict()`` and checkpoint ``weights``, said in words.

    ``load_state_dict(strict=False)`` skips missing keys but raises a long RuntimeError on a shape mismatch;
    this names the key instead (None when every key is there with its shape).
    """
    for key, value in expected.items():
        if key not in weights:
            return f"key {key!r} is missing from the checkpoint"
        if tuple(weights[key].shape) != tuple(value.shape):
            return (f"{key!r} has shape {tuple(weights[key].shape)} in the checkpoint and "
                    f"{tuple(value.shape)} in the model")  # fmt: skip
    extra = sorted(set(weights) - set(expected))
    return f"the checkpoint holds keys the model lacks ({', '.join(extra[:3])})" if extra else None


def step_of(path: str | Path) -> int | None:
    """The step of a ``step_XXXXXXXX.pt`` file name; None for other names (``best.pt``)."""
    match = CKPT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: str | Path) -> list[Path]:
    """``step_*.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def latest_valid(folder: str | Path) -> Path | None:
    """The newest checkpoint that verifies; each newer one that fails is named in a warning."""
    for path in reversed(list_checkpoints(folder)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s; falling back to the previous one", err)
            continue
        return path
    return None


def prune_checkpoints(folder: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step checkpoints (and their records); returns what was removed."""
    removed = list_checkpoints(folder)[:-keep] if keep > 0 else []
    for path in removed:
        path.unlink(missing_ok=True)
        record_path(path).unlink(missing_ok=True)
    return removed


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Atomically copy a checkpoint and its record (e.g. to ``best.pt``)."""
    src, dst = Path(src), Path(dst)
    for a, b in ((src, dst), (record_path(src), record_path(dst))):

        def write(f: BinaryIO, a: Path = a) -> None:
            with open(a, "rb") as r:
                shutil.copyfileobj(r, f, 1 << 22)

        atomic_write(b, write)
    record = json.loads(record_path(dst).read_text())
    record["file"] = dst.name
    atomic_write(record_path(dst), lambda f: f.write(json.dumps(record, indent=1).encode()))
    fsync_dir(dst.parent)


# ------------------------------------------------------------------------------------------------ RNG


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) global RNG states as tensors and plain numbers."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`. RNG states are CPU byte tensors: a checkpoint loaded with
    ``map_location=cuda`` holds them on the GPU, so each is moved back first."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
