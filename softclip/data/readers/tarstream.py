"""A minimal, fast tar header walker for webdataset shards (ustar, GNU long names, pax ``path``/``size``).

Every training worker walks the headers of all shards of its rank (to skip other workers' samples without
reading them), so header parsing must be cheap: :mod:`tarfile` spends ~50-100 us per header, this ~5 us. Only
names, data offsets and sizes are needed; no member is ever extracted to disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")


class TarFormatError(OSError):
    """A shard is truncated or not a tar where a header or member data was expected."""


class Member(NamedTuple):
    """A regular file in a tar: its name, the offset of its data and its size in bytes."""

    name: str
    offset: int
    size: int


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big")
    text = field.strip(b" \0")
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def iter_members(f: BinaryIO) -> Iterator[Member]:
    """Yield the regular-file members of the tar open as ``f``, in order.

    The archive ends at two zero blocks or at the end of the file (a shard cut at a header boundary simply
    ends early). A partial or corrupt header raises TarFormatError; member data is not read.
    """
    pos, long_name, pax = 0, None, {}
    while True:
        f.seek(pos)
        hdr = f.read(BLOCK)
        if not hdr or hdr == bytes(BLOCK):
            return
        if len(hdr) < BLOCK:
            raise TarFormatError(f"truncated tar header at byte {pos}")
        checksum = _number(hdr[148:156])
        if checksum != sum(hdr) - sum(hdr[148:156]) + 8 * 32:
            raise TarFormatError(f"invalid tar header checksum at byte {pos}")
        size = _number(hdr[124:136])
        kind = hdr[156:157]
        data = pos + BLOCK
        pos = data + -(-size // BLOCK) * BLOCK
        if kind in (b"L", b"x"):  # GNU long name / pax extended header: apply to the next member
            f.seek(data)
            body = f.read(size)
            if len(body) < size:
                raise TarFormatError(f"truncated extended header at byte {data}")
            if kind == b"L":
                long_name = _text(body)
            else:
                pax = _pax(body)
            continue
        if kind in _REGULAR:
            name = _text(hdr[0:100])
            if hdr[257:263] == b"ustar\0" and hdr[345] != 0:
                name = _text(hdr[345:500]) + "/" + name
            name = pax.get("path", long_name or name)
            if "size" in pax:
                size = int(pax["size"])
                pos = data + -(-size // BLOCK) * BLOCK
            yield Member(name, data, size)
        long_name, pax = None, {}


def read_data(f: BinaryIO, member: Member) -> bytes:
    """The data of ``member``; TarFormatError when the shard ends inside it."""
    f.seek(member.offset)
    data = f.read(member.size)
    if len(data) != member.size:
        raise TarFormatError(f"unexpected end of data in {member.name}")
    return data
