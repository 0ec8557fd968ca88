"""One way to write a file: a uniquely named temporary sibling, flushed and fsynced, moved into place with
``os.replace``, then the folder fsynced. Readers see the old file or the new one, never half of one; a failure
(disk full, read-only folder, Ctrl-C) leaves no temporary file behind and, for the write's own failures, is
one :class:`softclip.errors.WriteError` naming the path, whatever the library raised."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from softclip.errors import disk_full, os_error_reason, writing

T = TypeVar("T")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], T], mode: int = 0o644) -> T:
    """Run ``write(f)`` on a temporary file beside ``path`` and move it into place; returns what it returned.

    Args:
        path: the destination; its folder must exist.
        write: fills the binary file object it is given.
        mode: permission bits of the result (before the umask), as ``open`` would give a new file.
    """
    path = Path(path)
    with writing(path):  # disk full, read-only, missing folder, permission: one WriteError naming the path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                result = write(f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, mode & ~umask)
            os.replace(tmp, path)
        except BaseException as err:
            # a library that swallowed the OS's ENOSPC (torch: "unexpected pos ..."): judge before the
            # temporary file is gone and its space free again
            full = isinstance(err, RuntimeError) and disk_full(path.parent)
            Path(tmp).unlink(missing_ok=True)
            if full:
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({os_error_reason(err)})") from err
            raise
    fsync_dir(path.parent)
    return result


def write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    atomic_write(path, lambda f: f.write(data), mode)
    return Path(path)


def write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), mode)


def write_json(path: str | Path, obj: Any, indent: int | None = 1, mode: int = 0o644) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n", mode)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (someone else's counts): the owner of a lock file
    or a staging folder named after its pid may still be writing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
