"""Image loading for evaluation: a path-list Dataset that skips (and counts) unreadable images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from softclip.data.badsamples import BadSample, BadSamples
from softclip.data.readers.base import Preprocess
from softclip.data.readers.decode import decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (by suffix, case-insensitive), optionally recursing."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFiles(Dataset):
    """Loads ``paths[i]`` with ``preprocess``. Items are ``(image float [3,H,W] or None, i, error message)``."""

    def __init__(self, paths: Sequence[str | Path], preprocess: Preprocess) -> None:
        self.paths = [str(p) for p in paths]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError as err:
            return None, i, f"missing_image: {err.strerror or err}"
        try:
            img = decode_image(data)
        except BadSample as err:
            return None, i, str(err)
        return self.preprocess(self.adjust(img, i)), i, ""

    def adjust(self, img: Image.Image, i: int) -> Image.Image:
        """Hook for subclasses (e.g. query cropping) applied to the decoded image before ``preprocess``."""
        return img


def collate_images(items: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Stack the readable items: (images float [b,3,H,W], indices long [b], [(index, error)] of skipped ones)."""
    ok = [(img, i) for img, i, err in items if img is not None]
    skipped = [(i, err) for img, i, err in items if img is None]
    images = torch.stack([img for img, _ in ok]) if ok else torch.empty(0)
    return images, torch.tensor([i for _, i in ok], dtype=torch.long), skipped


def iter_image_batches(
    paths: Sequence[str | Path], preprocess: Preprocess, *, batch_size: int = 64, workers: int = 0,
    bad: BadSamples | None = None, source: str = "images",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images [b,3,H,W], indices [b])`` over ``paths`` in order; unreadable images are skipped and
    counted in ``bad`` (reason from the error, key = path, source = ``source``), so callers see which
    indices are missing from ``indices``."""
    ds = ImageFiles(paths, preprocess)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_images)
    for images, indices, skipped in loader:
        for i, err in skipped:
            if bad is not None:
                reason, _, detail = err.partition(": ")
                bad.add(reason, ds.paths[i], source, detail)
        if len(indices):
            yield images, indices
