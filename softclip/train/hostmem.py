"""How the training process's C heap treats freed host memory.

A CPU training step allocates and frees the same large tensors every step (activations, the dense gradient
of the token-embedding table: 49408 x width floats). glibc serves a block above its mmap threshold with a fresh
mapping and unmaps it on free, and trims freed memory at the top of the heap back to the system, so the next
step faults the same pages in again and the kernel zeroes them. ``retain`` keeps such blocks in the heap
(``mallopt``: mmap threshold 32 MiB, the most glibc accepts; trimming only above 1 GiB of free heap), which
costs at most the process's peak heap in resident memory and changes no number the run computes. ``system``
leaves the C library's defaults. Outside glibc ``retain`` does nothing (and says so at debug level).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("softclip.train")

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
RETAIN = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}
HOST_MEMORY_MODES = ("retain", "system")


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def configure_host_memory(mode: str, libc: ctypes.CDLL | None = None) -> bool:
    """Apply ``train.host_memory`` to this process; True when the heap settings were changed.

    Args:
        mode: ``retain`` or ``system``.
        libc: the C library to call (default: this process's glibc, None elsewhere).
    """
    if mode not in HOST_MEMORY_MODES:
        raise ValueError(f"train.host_memory: {mode!r} is not one of {', '.join(HOST_MEMORY_MODES)}")
    if mode == "system":
        return False
    libc = libc if libc is not None else _glibc()
    if libc is None:
        log.debug("train.host_memory=retain: not glibc, the C library's defaults stay")
        return False
    ok = all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in RETAIN.items())
    if not ok:
        log.debug("train.host_memory=retain: mallopt refused a setting, the C library's defaults may stay")
    return ok
