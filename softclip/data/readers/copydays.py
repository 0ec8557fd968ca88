"""Copy detection in the Copydays layout (``original/``, ``strong/``, ``jpegqual/{q}/``, ``crops/{pct}/``).

The database is the originals followed by the distractors; a query's ground truth is the original whose file
name shares its first four characters (the block). ``whitening/`` holds a separate set for PCA-whitening.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softclip.data import layout
from softclip.data.badsamples import DataError
from softclip.data.readers.base import EVAL_READERS, require
from softclip.data.readers.images import list_images

BLOCK_CHARS = 4


@dataclass
class CopydaysBlock:
    """Queries of one attack block: ``gt[i]`` (int64 [n]) indexes the database; ``levels[i]`` is the
    sub-folder (JPEG quality, crop percent) or ``""``."""

    name: str
    paths: list[Path]
    gt: np.ndarray
    levels: list[str]


@dataclass
class CopydaysData:
    """Database (originals first, then distractors), query blocks and the whitening images."""

    root: Path
    database: list[Path]
    num_originals: int
    blocks: dict[str, CopydaysBlock]
    whitening: list[Path]


def _block(folder: Path, name: str, original_of: dict[str, int]) -> CopydaysBlock:
    paths, gt, levels = [], [], []
    for p in list_images(require(folder, f"Copydays block {name!r}"), recursive=True):
        idx = original_of.get(p.stem[:BLOCK_CHARS])
        if idx is None:
            raise DataError(f"Copydays query {p} has no original with prefix {p.stem[:BLOCK_CHARS]!r}")
        paths.append(p)
        gt.append(idx)
        levels.append("" if p.parent == folder else p.parent.relative_to(folder).as_posix())
    return CopydaysBlock(name, paths, np.asarray(gt, dtype=np.int64), levels)


def _folder_list(value: bool | str | Path, default: Path, what: str, required: bool) -> list[Path]:
    if value is False:
        return []
    folder = default if value is True else Path(value)
    if not folder.is_dir():
        if required or value is not True:
            raise DataError(f"{what} folder not found: {folder}")
        return []
    return list_images(folder, recursive=True)


@EVAL_READERS.register("copydays")
def read_copydays(
    root: str | Path, blocks: tuple[str, ...] = layout.COPYDAYS_BLOCKS, distractors: bool | str | Path = True,
    whitening: bool | str | Path = True,
) -> CopydaysData:
    """Read Copydays. ``distractors``/``whitening``: True for the folder under ``root`` (distractors are then
    required; whitening is optional), a path for another folder, False for none."""
    root = require(Path(root), "Copydays root")
    originals = list_images(require(root / "original", "Copydays originals"))
    if not originals:
        raise DataError(f"no images in {root / 'original'}")
    original_of = {p.stem[:BLOCK_CHARS]: i for i, p in enumerate(originals)}
    if len(original_of) != len(originals):
        raise DataError(f"{root / 'original'}: two originals share a {BLOCK_CHARS}-character block prefix")
    extra = _folder_list(distractors, root / layout.COPYDAYS_DISTRACTORS, "Copydays distractors", True)
    white = _folder_list(whitening, root / layout.COPYDAYS_WHITENING, "Copydays whitening", False)
    qblocks = {b: _block(root / b, b, original_of) for b in blocks}
    return CopydaysData(root, originals + extra, len(originals), qblocks, white)
