"""One owner per run folder: ``<run>/lock.json``, created atomically, naming its owner, kept alive by a heartbeat.

The lock file is written as a temporary sibling and hard-linked into place: ``link`` fails when the name exists,
atomically, also on NFS and Lustre, where ``flock`` may be a no-op or local to one node. A lock is stale, and is
taken over with a warning, when

- its owner ran on this host and its pid is gone;
- its heartbeat is older than ``stale_s`` (an owner on another host that died, or lost its node);
- its owner is this very SLURM job (``<array>_<task>`` or the job id): the job was requeued, the old process
  is gone with its allocation.

Anything else is a live owner, and a second trainer refuses with :class:`RunLockedError` (exit code 2).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from softclip.atomic import atomic_write, pid_alive
from softclip.runfiles import LOCK
from softclip.train.errors import RunLockedError

log = logging.getLogger("softclip.train")

HEARTBEAT_S = 30.0
STALE_S = 300.0  # ten missed heartbeats: generous for clock skew between cluster nodes


def slurm_job_id() -> str | None:
    """This process's SLURM job (``<array>_<task>`` for array tasks), stable across requeues; None outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def describe_owner(owner: dict[str, Any]) -> str:
    """``host h, pid p, SLURM job j, last heartbeat 12 s ago`` (the parts the lock holds)."""
    parts = [f"host {owner.get('host', '?')}", f"pid {owner.get('pid', '?')}"]
    if owner.get("job_id"):
        parts.append(f"SLURM job {owner['job_id']}")
    beat = owner.get("heartbeat")
    if isinstance(beat, (int, float)):
        parts.append(f"last heartbeat {max(0.0, time.time() - beat):.0f} s ago")
    return ", ".join(parts)


def stale_reason(owner: dict[str, Any], stale_s: float = STALE_S) -> str | None:
    """Why the lock of ``owner`` may be taken over, or None when its owner may still be alive."""
    same_host = owner.get("host") == socket.gethostname()
    pid = owner.get("pid")
    if same_host and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid):
        return f"its owner (pid {pid} on this host) is gone"
    beat = owner.get("heartbeat")
    if not isinstance(beat, (int, float)) or time.time() - beat > stale_s:
        return f"its heartbeat is older than {stale_s:.0f} s"
    mine = slurm_job_id()
    if mine is not None and owner.get("job_id") == mine and not (same_host and isinstance(pid, int) and pid_alive(pid)):
        return f"it belongs to this SLURM job ({mine}), requeued"
    return None


class RunLock:
    """The lock of ``run_dir`` (created if missing), held from :meth:`acquire` to :meth:`release` (or the
    ``with`` block), its heartbeat refreshed every ``heartbeat_s`` (0: only at acquisition); a heartbeat older
    than ``stale_s`` marks it stale."""

    def __init__(self, run_dir: str | Path, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _owner(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": slurm_job_id(), "token": self.token,
                "started": getattr(self, "_started", time.time()), "heartbeat": time.time()}  # fmt: skip

    def read(self) -> dict[str, Any] | None:
        """The lock's owner record; None when there is no lock; ``{}`` when it cannot be parsed."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _link_new(self) -> bool:
        """Create the lock file atomically; False when it exists already."""
        self._started = time.time()
        data = json.dumps(self._owner(), indent=1).encode()
        tmp = self.path.with_name(f".{LOCK}.{self.token}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create (the content follows at once)
            with contextlib.suppress(FileExistsError), open(self.path, "xb") as f:
                f.write(data)
                return True
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        """Take the lock, taking over a stale one (logged); raises RunLockedError when another owner is alive."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._link_new():
                break
            owner = self.read()
            if owner is None:
                continue  # released in between: try again
            reason = stale_reason(owner, self.stale_s) if owner else self._unreadable_reason()
            if reason is None:
                raise RunLockedError(
                    f"{self.run_dir} is in use by another trainer ({describe_owner(owner)}); wait for it to "
                    f"finish, or remove {self.path} if that process is known to be dead"
                )
            if self._take_over(owner):
                log.warning("took over the stale lock of %s: %s (was %s)", self.run_dir, reason,
                            describe_owner(owner) if owner else "unreadable")  # fmt: skip
                break
        else:  # pragma: no cover - five lost races in a row
            raise RunLockedError(f"{self.run_dir}: could not take its lock {self.path} (contended)")
        if self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat_loop, name="softclip-run-lock", daemon=True)
            self._thread.start()
        return self

    def _unreadable_reason(self) -> str | None:
        """A lock file that cannot be parsed is stale once it is older than ``stale_s`` (else: being written)."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "it vanished"
        return f"it is unreadable and {age:.0f} s old" if age > self.stale_s else None

    def _take_over(self, seen: dict[str, Any]) -> bool:
        """Replace the stale lock ``seen`` by ours, unless someone replaced it in between."""
        aside = self.path.with_name(f".{LOCK}.{self.token}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            moved = {}
        if moved != seen:  # we moved a lock that another trainer had just taken: give it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return self._link_new()

    def owns(self) -> bool:
        """True while the lock file on disk is still ours."""
        owner = self.read()
        return bool(owner) and owner.get("token") == self.token

    def beat(self) -> bool:
        """Refresh the heartbeat (an atomic replace); False, and :attr:`lost` set, once the lock is not ours."""
        if not self.owns():
            if not self.lost:
                log.error("lost the lock of %s: another process took it over", self.run_dir)
            self.lost = True
            return False
        data = json.dumps(self._owner(), indent=1).encode()
        atomic_write(self.path, lambda f: f.write(data))
        return True

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.beat():
                    return
            except OSError as err:  # a full disk must not kill training; the next beat may succeed
                log.warning("could not refresh the lock of %s: %s", self.run_dir, err)

    def check(self) -> None:
        """Raise RunLockedError when the lock was lost (before writing results that a new owner may own)."""
        if self.lost or not self.owns():
            self.lost = True
            owner = self.read() or {}
            raise RunLockedError(f"{self.run_dir} was taken over by another trainer ({describe_owner(owner)}); "
                                 "this run stops without writing its results")  # fmt: skip

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.owns():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def wait_unlocked(run_dir: str | Path, poll_s: float = 2.0, stale_s: float = STALE_S) -> bool:
    """Block while another live trainer holds ``run_dir``'s lock; True when it had to wait."""
    lock, waited = RunLock(run_dir, stale_s=stale_s), False
    while (owner := lock.read()) and stale_reason(owner, stale_s) is None:
        if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            return waited  # our own (this process trains it): not another driver
        if not waited:
            log.info("%s is being trained by another driver (%s): waiting for it", run_dir, describe_owner(owner))
        waited = True
        time.sleep(poll_s)
    return waited
