"""The stream of training micro-batches across epochs, with its resumable position."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch

from softclip.train.errors import TrainingError
from softclip.train.step import to_device


class DataStream:
    """Micro-batches on the device, across epochs, with the loader position and bad-sample counts."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self._it: Iterator[dict] | None = None

    def next(self) -> dict[str, torch.Tensor]:
        empty_epochs = 0
        while True:
            if self._it is None:
                self._it = iter(self.loader)
            try:
                return to_device(next(self._it), self.device)
            except StopIteration:
                self._it = None
                empty_epochs += 1
                if empty_epochs > 1:
                    raise TrainingError(
                        f"the training data yielded no batch for a whole epoch ({self.loader.epoch})"
                    ) from None

    @property
    def epoch(self) -> int:
        return int(self.loader.epoch)

    def state_dict(self) -> dict[str, Any]:
        bad = self.loader.bad
        return {
            "position": self.loader.state_dict(),
            "bad_seen": int(bad.seen),
            "bad_counts": dict(bad.counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._it = None
        self.loader.load_state_dict(state["position"])
        self.loader.bad.seen = int(state["bad_seen"])
        self.loader.bad.counts = Counter(state["bad_counts"])
