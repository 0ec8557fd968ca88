"""The root of the suite's own errors: the CLI reports a :class:`SoftclipError` in one line (``-v`` adds the
traceback) and exits with its ``exit_code``. :func:`writing` turns any failure of a write (disk full, read-only,
missing folder, permission; whatever type the library raises for it) into one :class:`WriteError` naming the path."""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from collections.abc import Iterator
from pathlib import Path


class SoftclipError(Exception):
    """An error a user can act on (bad input, an unreachable service); ``exit_code`` is the CLI's exit status.

    ``label`` prefixes the CLI's one line (``softclip: config error: ...``).
    """

    exit_code = 1
    label = "error"


class WriteError(SoftclipError, OSError):
    """A file that could not be written; the message is ``cannot write PATH: REASON``."""


# Words in the message of a non-OSError that mark it as an I/O failure of the write (torch.save raises
# RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") on a full disk).
_IO_WORDS = ("write", "writing", "file", "stream", "disk", "space", "i/o", "quota")


_TORCH_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")  # torch's C++ location prefix


DISK_FULL_BYTES = 1 << 20  # less free space than this, and a write failed: the disk is full


def disk_full(path: str | Path) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing folder) is (nearly) out of space."""
    path = Path(path)
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BYTES
    except OSError:
        return False


def os_error_reason(err: BaseException) -> str:
    """The short reason of an error: the OS's words for its errno (``No space left on device``), else its first
    line (libraries raise ``OSError("...")`` without errno, or RuntimeErrors), else its type."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.strerror or errno.errorcode.get(err.errno, str(err.errno))
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return _TORCH_ENFORCE.sub("", text)[:200] or type(err).__name__


def write_error(path: str | Path, err: BaseException) -> WriteError:
    """``cannot write PATH: REASON`` for an error raised while writing ``path`` (disk full named as such)."""
    path = Path(path)
    reason = os_error_reason(err)
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and disk_full(path):
        reason = f"No space left on device ({reason})"
    return WriteError(f"cannot write {path}: {reason}")


def is_write_failure(err: BaseException, path: str | Path) -> bool:
    """Whether ``err``, raised while writing ``path``, is a failure of the write rather than a bug."""
    if isinstance(err, WriteError):
        return False  # already said
    if isinstance(err, OSError):
        return True
    if isinstance(err, RuntimeError):
        return any(w in str(err).lower() for w in _IO_WORDS) or disk_full(Path(path))
    return False


# SQLite's words for a failed write (sqlite3.OperationalError carries no errno; SQLAlchemy and Optuna wrap it).
_SQLITE_IO = ("disk is full", "readonly database", "unable to open database file", "disk i/o error")


def io_cause(err: BaseException) -> BaseException | None:
    """The failed write behind ``err`` (itself or a cause/context in its chain): an OSError, or SQLite's
    OperationalError saying the disk is full, the database read-only or unopenable; None otherwise."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            return err
        if type(err).__name__ == "OperationalError" and any(w in str(err).lower() for w in _SQLITE_IO):
            return getattr(err, "orig", None) or err  # SQLAlchemy's wrapper: the driver's own words
        err = err.__cause__ or err.__context__ or getattr(err, "orig", None)
    return None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise a failure of the write to ``path`` inside the block as :class:`WriteError` (the cause chained, so
    ``-v`` shows the library's traceback)."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not is_write_failure(err, path):
            raise
        raise write_error(path, err) from err
