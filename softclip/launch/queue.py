"""The worker pool's file queue and its JSON codec (see :mod:`softclip.launch.pool`).

A pool folder holds ``tasks/<id>.json`` (the function's import path and its JSON-encoded arguments),
``queue/<id>`` markers, ``claimed/<id>@<worker>``, ``results/<id>.json``, ``workers/<worker>.json`` status files
and a ``closed`` marker. Every state change is one ``rename`` or one atomic write. Nothing is unpickled:
arguments and results are JSON, and dataclasses are rebuilt only from importable dataclass types.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from softclip.atomic import write_json

CLOSED = "closed"


# ------------------------------------------------------------------------------------------------ the codec


def fn_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of an importable module-level function (ValueError otherwise)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in name:
        raise ValueError(f"the worker pool runs importable module-level functions; got {fn!r} "
                         f"({module}:{name}); use the slurm launcher for closures")  # fmt: skip
    if resolve_fn(f"{module}:{name}") is not fn:
        raise ValueError(f"{module}:{name} does not import back to {fn!r}")
    return f"{module}:{name}"


def resolve_fn(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def encode(obj: Any) -> Any:
    """Plain JSON for ``obj``: numbers, strings, None, lists, tuples, str-keyed dicts, paths, dataclasses."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [encode(o) for o in obj]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"dict keys must be strings to cross the worker pool: {list(obj)[:5]!r}")
        return {"__dict__": {k: encode(v) for k, v in obj.items()}}
    if isinstance(obj, Path):
        return {"__path__": str(obj)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        fields = {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return encode(obj.item())
    raise TypeError(f"cannot send a {type(obj).__name__} through the worker pool (JSON only): {obj!r:.80}")


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`; a ``__dataclass__`` must name an importable dataclass."""
    if isinstance(obj, list):
        return [decode(o) for o in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tuple__" in obj:
        return tuple(decode(o) for o in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: decode(v) for k, v in obj["__dict__"].items()}
    if "__path__" in obj:
        return Path(obj["__path__"])
    if "__dataclass__" in obj:
        cls = resolve_fn(obj["__dataclass__"])
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{obj['__dataclass__']} is not a dataclass")
        return cls(**{k: decode(v) for k, v in obj["fields"].items()})
    raise TypeError(f"unknown encoded object with keys {sorted(obj)}")


# ------------------------------------------------------------------------------------------------ the queue


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json(path, data, indent=None)


class TaskQueue:
    """The pool's folder: ``tasks/``, ``queue/``, ``claimed/``, ``results/``, ``workers/`` and ``closed``.

    Every state change is one ``rename`` or one atomic write, so a killed driver or worker leaves no
    half-written file and two workers never claim the same job.
    """

    DIRS = ("tasks", "queue", "claimed", "results", "workers")

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def create(self) -> TaskQueue:
        """Make the folders, readable by this user only (jobs may carry a storage URL with a password)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in self.DIRS:
            (self.folder / name).mkdir(exist_ok=True, mode=0o700)
        return self

    def put(self, task_id: str, fn: str, args: Any) -> None:
        _write_json(self.folder / "tasks" / f"{task_id}.json", {"id": task_id, "fn": fn, "args": args})
        (self.folder / "queue" / task_id).touch()

    def read_task(self, task_id: str) -> dict[str, Any]:
        return json.loads((self.folder / "tasks" / f"{task_id}.json").read_text())

    def pending(self) -> list[str]:
        return sorted(p.name for p in (self.folder / "queue").iterdir())

    def claims(self, worker: str | None = None) -> dict[str, str]:
        """``{task id: worker}`` of the claimed jobs (of one worker when given)."""
        out = {}
        for path in (self.folder / "claimed").iterdir():
            task_id, _, owner = path.name.partition("@")
            if worker is None or owner == worker:
                out[task_id] = owner
        return out

    def claim(self, worker: str) -> str | None:
        """Move the oldest queued job to ``claimed/`` for ``worker``; None when the queue is empty."""
        for task_id in self.pending():
            try:
                os.rename(self.folder / "queue" / task_id, self.folder / "claimed" / f"{task_id}@{worker}")
            except FileNotFoundError:  # another worker won it
                continue
            return task_id
        return None

    def finish(self, task_id: str, worker: str, payload: dict[str, Any]) -> None:
        _write_json(self.folder / "results" / f"{task_id}.json", payload)
        (self.folder / "claimed" / f"{task_id}@{worker}").unlink(missing_ok=True)

    def result(self, task_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / "results" / f"{task_id}.json").read_text())
        except FileNotFoundError:
            return None

    def has_result(self, task_id: str) -> bool:
        return (self.folder / "results" / f"{task_id}.json").is_file()

    def withdraw(self, task_id: str) -> bool:
        """Take a job that no worker claimed yet off the queue (True) or report that it was claimed (False)."""
        try:
            (self.folder / "queue" / task_id).unlink()
        except FileNotFoundError:
            return False
        self.finish(task_id, "-", {"ok": False, "error": "cancelled before a worker claimed it"})
        return True

    def open_claims(self, worker: str) -> list[str]:
        """The jobs ``worker`` claimed and did not finish, oldest first. A claim whose result was written (the
        worker died between writing it and dropping the claim) is dropped here, never run or failed again."""
        open_ = []
        for task_id in sorted(self.claims(worker)):
            if self.has_result(task_id):
                (self.folder / "claimed" / f"{task_id}@{worker}").unlink(missing_ok=True)
            else:
                open_.append(task_id)
        return open_

    def fail_claims(self, worker: str, error: str) -> list[str]:
        """Fail the unfinished jobs ``worker`` had claimed (its SLURM job ended); returns their ids."""
        lost = self.open_claims(worker)
        for task_id in lost:
            self.finish(task_id, worker, {"ok": False, "error": error, "worker": worker})
        return lost

    def close(self) -> None:
        (self.folder / CLOSED).touch()

    @property
    def closed(self) -> bool:
        return (self.folder / CLOSED).exists()

    def beat(self, worker: str, **state: Any) -> None:
        """The worker's status file (host, pid, current job, jobs done), rewritten on every change."""
        _write_json(self.folder / "workers" / f"{worker}.json",
                    {"worker": worker, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                     **state})  # fmt: skip
