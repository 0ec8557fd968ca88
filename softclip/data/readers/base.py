"""Reader registries, the decoded training sample, and the training-source protocol.

A training source (``TRAIN_READERS``) exposes its samples as a sequence of *input positions* per epoch and
rank (``input_stream``), reads the raw bytes of requested positions in ascending order (``read``) and turns
one raw record into a :class:`Sample` (``decode``). The loader owns shuffling, batching, workers and
accounting, so every source gets determinism and exact resume for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from softclip.data.badsamples import BadRecord, DataError
from softclip.registry import Registry

TRAIN_READERS: Registry[Callable[..., TrainSource]] = Registry("data.source")
EVAL_READERS: Registry[Callable[..., Any]] = Registry("eval dataset format")

Preprocess = Callable[[Any], torch.Tensor]


@dataclass
class Sample:
    """One decoded training pair.

    Attributes:
        image: preprocessed image, float [3, H, W].
        caption: the caption string (non-empty).
        roi: region features, float32 [K, D] (K >= 0; the last 6 columns are box geometry).
        tags: the K region tags (detector class names), in region order.
        key: the sample key (tar key or image id).
        source: the shard or source file it came from.
        scene: (image code int64 [T+1], caption code int64 [2M+1]) when the reader was asked for scene
            annotations (:mod:`softclip.objective.oracle`), else None.
    """

    image: torch.Tensor
    caption: str
    roi: torch.Tensor
    tags: list[str]
    key: str
    source: str
    scene: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class SourcePaths:
    """Where a training source lives (the ``data`` config fields). Relative paths resolve against ``root``."""

    root: str | None = None
    train: str | list[str] | None = None
    csv: str | None = None
    features_tsv: str | None = None
    labels_tsv: str | None = None
    images_root: str | None = None

    @property
    def root_path(self) -> Path | None:
        """``root`` as an absolute path (None when unset)."""
        return Path(self.root).expanduser().absolute() if self.root is not None else None

    def resolve(self, path: str | None) -> Path | None:
        """``path`` joined to ``root`` when relative (None stays None)."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.root is None else self.root_path / p


class TrainSource(Protocol):
    """What the training loader needs from a source (``wds``, ``csv``)."""

    name: str
    num_samples: int
    sequential: bool  # True: reads must go in stream order (tar shards), so the loader adds a shuffle buffer

    def input_stream(
        self, *, seed: int, epoch: int, rank: int, world_size: int, n: int, shuffle: bool, resampled: bool
    ) -> Any:
        """The ``n`` samples of one rank's epoch, in read order (an opaque object ``read`` understands)."""
        ...

    def read(self, stream: Any, wanted: np.ndarray) -> Iterator[tuple[int, Any]]:
        """Yield ``(position, raw)`` or ``(position, BadRecord)`` for each sorted wanted position, ascending."""
        ...

    def decode(self, raw: Any, preprocess: Preprocess) -> Sample:
        """Turn one raw record into a Sample; raises BadSample when unusable."""
        ...


def require(path: Path | str, what: str) -> Path:
    """Return ``path`` if it exists, else raise DataError naming it and what it should hold."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    return p


def check_exist(paths: list[Path], what: str) -> None:
    """DataError naming the first missing file (and how many are missing) among ``paths``."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{what}: {len(missing)} of {len(paths)} images are missing, e.g. {missing[0]}")


def rng_for(seed: int, *parts: int | str) -> np.random.Generator:
    """A numpy Generator that is a pure function of ``seed`` and the ``parts`` (ints or short strings)."""
    words = [int(seed) & 0xFFFFFFFF]
    for p in parts:
        words.append(int.from_bytes(p.encode()[:8].ljust(8, b"\0"), "little") if isinstance(p, str) else int(p))
    return np.random.default_rng(np.random.SeedSequence(words))


__all__ = [
    "EVAL_READERS",
    "TRAIN_READERS",
    "BadRecord",
    "Preprocess",
    "Sample",
    "SourcePaths",
    "TrainSource",
    "check_exist",
    "require",
    "rng_for",
]
