"""Readers for the real data formats, selected through two registries.

- ``TRAIN_READERS`` (config key ``data.source``): ``wds`` (webdataset shards + ROI sidecars) and ``csv``
  (CSV pairs + VinVL TSVs); each entry is ``open(paths: SourcePaths, *, roi_dim, sidecars, log) -> TrainSource``.
  :func:`softclip.data.loader.build_train_loader` turns a source into batches.
- ``EVAL_READERS``: ``imagefolder``, ``karpathy``, ``revisitop``, ``copydays``; each returns a plain dataclass
  of paths and labels. :mod:`softclip.data.readers.images` loads the images.
"""

from softclip.data.readers import copydays, imagefolder, karpathy, revisitop, vinvl, webdataset  # noqa: F401
from softclip.data.readers.base import EVAL_READERS, TRAIN_READERS, Sample, SourcePaths, TrainSource
from softclip.data.readers.copydays import CopydaysBlock, CopydaysData, read_copydays
from softclip.data.readers.imagefolder import ImageFolderData, read_imagefolder
from softclip.data.readers.images import ImageFiles, collate_images, iter_image_batches
from softclip.data.readers.karpathy import KarpathyData, read_karpathy
from softclip.data.readers.revisitop import RevisitopData, read_revisitop, restricted_load

__all__ = [
    "EVAL_READERS",
    "TRAIN_READERS",
    "CopydaysBlock",
    "CopydaysData",
    "ImageFiles",
    "ImageFolderData",
    "KarpathyData",
    "RevisitopData",
    "Sample",
    "SourcePaths",
    "TrainSource",
    "collate_images",
    "iter_image_batches",
    "read_copydays",
    "read_imagefolder",
    "read_karpathy",
    "read_revisitop",
    "restricted_load",
]
