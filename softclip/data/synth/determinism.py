"""Seeded random streams and byte-stable writers (JPEG, npy, JSON, tar) for reproducible datasets.

Every item (image, caption, view) draws from its own stream ``rng_for(seed, name, index)``, so results do not
depend on how the work is split across processes. Writers fix everything that could vary between runs: tar
member order, mtimes, owners and modes, JPEG quality and chroma subsampling, JSON key order.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def rng_for(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """The random stream of item ``index`` of the named stream ``stream`` under ``seed``."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), index])


def jpeg_bytes(img: Image.Image, quality: int, subsampling: int | None = 0) -> bytes:
    """Encode RGB ``img`` as baseline JPEG (no metadata); subsampling 0 is 4:4:4, None the encoder default."""
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": quality, "optimize": False}
    if subsampling is not None:
        kwargs["subsampling"] = subsampling
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in .npy format."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def json_bytes(obj: Any, indent: int | None = None) -> bytes:
    """UTF-8 JSON in insertion order (callers build dicts in a fixed order)."""
    sep = (",", ":") if indent is None else (",", ": ")
    return json.dumps(obj, ensure_ascii=False, indent=indent, separators=sep).encode("utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON (see ``json_bytes``) with a trailing newline when indented."""
    write_bytes(path, json_bytes(obj, indent) + (b"\n" if indent is not None else b""))


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar's default blocking factor, as GNU tar and Python's tarfile pad


def _ustar_header(name: str, size: int) -> bytes:
    """A ustar header for a regular file: mode 0644, uid/gid 0, mtime 0, no owner names."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    fields = [
        raw.ljust(100, b"\0"), b"0000644\0", b"0000000\0", b"0000000\0", b"%011o\0" % size,
        b"00000000000\0", b" " * 8, b"0", b"\0" * 100, b"ustar\x0000", b"\0" * 32, b"\0" * 32,
        b"\0" * 8, b"\0" * 8, b"\0" * 155,
    ]
    header = b"".join(fields).ljust(_BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


class TarWriter:
    """Write a ustar archive with fixed metadata (mtime 0, uid/gid 0, mode 0644, no owner names).

    Equivalent to ``tarfile`` in USTAR format with those fields fixed, but several times faster for the many
    small members of a webdataset shard.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._offset = 0

    def add(self, name: str, data: bytes) -> None:
        pad = -len(data) % _BLOCK
        self._file.write(_ustar_header(name, len(data)) + data + b"\0" * pad)
        self._offset += _BLOCK + len(data) + pad

    def close(self) -> None:
        end = self._offset + 2 * _BLOCK
        self._file.write(b"\0" * (2 * _BLOCK + (-end % _RECORD)))
        self._file.close()

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
