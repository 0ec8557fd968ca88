"""CPU threads for a block of work: torch's intra-op pool plus every native pool (OpenBLAS/MKL under numpy, the
OpenMP pool FAISS uses), set together and restored after.

A run's results repeat bit for bit only on the same CPU family and thread count. Ranking ties among identical
captions are decided by the last bits of a BLAS product, so evaluating on the threads a run trained with
repeats its result JSON exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` CPU threads (0: as they are), restoring every pool's count after."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)
