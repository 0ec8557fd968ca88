"""Zero-shot classification sets in ImageFolder layout (``root/{split}/{class folder}/*.jpg``).

Beside the split folder (in ``root``, else in the split folder): ``classnames.txt`` (one name per line, in
sorted-folder order; default the folder names), ``templates.txt`` (prompt templates with ``{}`` or ``{c}``
for the class name; optional) and ``attributes.json`` (class name -> attributes; optional).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softclip.data import layout
from softclip.data.badsamples import DataError
from softclip.data.readers.base import EVAL_READERS, require
from softclip.data.readers.images import list_images


@dataclass
class ImageFolderData:
    """An ImageFolder split: ``paths[i]`` has label ``labels[i]`` (int64 [n]) indexing ``classnames``."""

    root: Path
    split: str
    paths: list[Path]
    labels: np.ndarray
    classnames: list[str]
    folders: list[str]
    templates: list[str] | None
    attributes: dict[str, dict] | None


def _find(root: Path, split_dir: Path, name: str) -> Path | None:
    return next((p for p in (root / name, split_dir / name) if p.is_file()), None)


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def read_templates(path: Path) -> list[str]:
    """Prompt templates, ``{c}`` normalised to ``{}``; DataError naming a line without a placeholder."""
    out = []
    for i, line in enumerate(_lines(path), 1):
        t = line.replace("{c}", "{}")
        if "{}" not in t:
            raise DataError(f"{path}:{i}: template {line!r} has no '{{}}' placeholder for the class name")
        out.append(t)
    return out


@EVAL_READERS.register("imagefolder")
def read_imagefolder(root: str | Path, split: str = "test") -> ImageFolderData:
    """Read an ImageFolder split with its class names, templates and attributes."""
    root = require(Path(root), "zero-shot dataset root")
    split_dir = root / split
    if not split_dir.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"zero-shot split {split!r} not found: {split_dir} (folders there: {have})")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"no class folders in {split_dir}")
    names_file = _find(root, split_dir, layout.CLASSNAMES_FILE)
    classnames = _lines(names_file) if names_file else folders
    if len(classnames) != len(folders):
        raise DataError(f"{names_file}: {len(classnames)} class names for {len(folders)} folders in {split_dir}")
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = list_images(split_dir / folder)
        paths += files
        labels += [label] * len(files)
    tpl = _find(root, split_dir, layout.TEMPLATES_FILE)
    attrs = _find(root, split_dir, layout.ATTRIBUTES_FILE)
    return ImageFolderData(
        root, split, paths, np.asarray(labels, dtype=np.int64), classnames, folders,
        read_templates(tpl) if tpl else None, json.loads(attrs.read_text()) if attrs else None,
    )
