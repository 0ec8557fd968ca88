"""Run logging: ``metrics.jsonl`` (one JSON object per line), optional TensorBoard, a tqdm progress bar.

Every line has ``kind`` (``train`` or ``eval``) and ``step``. Values are plain numbers; non-finite floats are
written as ``null`` (strict JSON). Timing values (``TIMING_KEYS``) are the only ones that differ between an
uninterrupted run and a killed-and-resumed one.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from softclip.atomic import write_text
from softclip.errors import writing

log = logging.getLogger("softclip.train")

TIMING_KEYS = ("samples_per_s", "step_time_s", "data_time_s", "step_cpu_s", "eval_time_s", "elapsed_s")


def _plain(value: Any) -> Any:
    """JSON-safe scalar: tensors -> numbers, non-finite -> None."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line, from a killed writer, is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def truncate_metrics(path: str | Path, step: int) -> int:
    """Drop records past ``step`` (work that a resumed run redoes); returns how many were dropped."""
    path = Path(path)
    records = read_metrics(path)
    keep = [r for r in records if r.get("step", 0) <= step]
    if path.is_file():
        write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return len(records) - len(keep)


class MetricsWriter:
    """Append records to ``metrics.jsonl`` and, when asked and importable, to TensorBoard.

    Args:
        path: the JSON-lines file (appended to).
        tensorboard_dir: event folder, or None for no TensorBoard.
        enabled: False on non-zero ranks (nothing is written).
    """

    def __init__(
        self, path: str | Path, tensorboard_dir: str | Path | None = None, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        self.path = Path(path)
        with writing(self.path):
            self._file = open(path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self._tb = self._open_tensorboard(tensorboard_dir) if enabled and tensorboard_dir else None

    @staticmethod
    def _open_tensorboard(folder: str | Path) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("train.tensorboard=true but the tensorboard package is not installed; skipping it")
            return None
        return SummaryWriter(str(folder))

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one record (``kind`` and ``step`` required); returns the JSON-safe version."""
        clean = {k: _plain(v) for k, v in record.items()}
        if self._file is not None:
            with writing(self.path):
                self._file.write(json.dumps(clean) + "\n")
                self._file.flush()
        if self._tb is not None:
            kind, step = clean["kind"], clean["step"]
            for key, value in clean.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key != "step":
                    self._tb.add_scalar(f"{kind}/{key}", value, step)
        return clean

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with writing(self.path):
                file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """tqdm bar over optimiser steps with samples/s; silent when not a TTY or not rank 0."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train")

    def update(self, loss: float | None, samples_per_s: float | None) -> None:
        if self.bar is None:
            return
        post = {}
        if loss is not None:
            post["loss"] = f"{loss:.4f}"
        if samples_per_s is not None:
            post["samples/s"] = f"{samples_per_s:.0f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
