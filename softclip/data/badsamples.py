"""Bad-sample accounting shared by every reader.

A sample that cannot be used (corrupt image, truncated shard, missing or mis-shaped sidecar, empty caption) is
skipped, counted by reason, logged with its key and shard on ``logging.getLogger("softclip.data")``, and a
bounded list of examples is kept. When the bad fraction passes ``max_fraction`` (after ``min_seen`` samples)
a :class:`DataError` stops the run. Structural problems (a missing file, split or shard) raise
:class:`DataError` at once, naming the path.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from softclip.errors import SoftclipError

LOGGER = logging.getLogger("softclip.data")


class DataError(SoftclipError, RuntimeError):
    """Bad data structure (missing path, split or shard) or too many bad samples. The message says which."""


class BadSample(Exception):
    """Raised by a decoder for one unusable sample; the caller counts it and skips the sample.

    Args:
        reason: short snake_case category, e.g. ``"corrupt_image"``, ``"bad_roi"``.
        detail: human detail (what was wrong), without the key or shard (the caller adds those).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class BadRecord:
    """One skipped sample: why, which key, which shard or source file."""

    reason: str
    key: str
    source: str
    detail: str = ""

    def describe(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.reason} (key {self.key!r} in {self.source}){extra}"


@dataclass
class BadSamples:
    """Counter of skipped samples per reason, with a bounded list of examples.

    Args:
        max_fraction: bound on bad / seen; ``None`` never raises.
        min_seen: the bound is checked only once this many samples were seen.
        keep: how many example records to keep.
        log_first: per reason, the first ``log_first`` records log at WARNING, the rest at DEBUG.
        logger: where to log; the ``softclip.data`` logger by default.
    """

    max_fraction: float | None = 0.01
    min_seen: int = 50
    keep: int = 100
    log_first: int = 20
    logger: logging.Logger = field(default=LOGGER, repr=False)
    seen: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[BadRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of bad samples so far."""
        return sum(self.counts.values())

    @property
    def fraction(self) -> float:
        """bad / seen (0 before anything was seen)."""
        return self.total / self.seen if self.seen else 0.0

    def __len__(self) -> int:
        return self.total

    def record(self, rec: BadRecord) -> None:
        """Count one bad record and log it (WARNING for the first few of each reason)."""
        self.counts[rec.reason] += 1
        n = self.counts[rec.reason]
        if len(self.examples) < self.keep:
            self.examples.append(rec)
        if n <= self.log_first:
            self.logger.warning("skipped bad sample: %s", rec.describe())
            if n == self.log_first:
                self.logger.warning("further %r samples are logged at DEBUG level", rec.reason)
        else:
            self.logger.debug("skipped bad sample: %s", rec.describe())

    def add(self, reason: str, key: str, source: str, detail: str = "") -> BadRecord:
        """Count a bad sample by its parts; returns the record."""
        rec = BadRecord(reason, key, source, detail)
        self.record(rec)
        return rec

    def merge(self, records: Iterable[BadRecord], seen: int) -> None:
        """Add a batch's bad records and its processed-sample count, then check the bound."""
        for rec in records:
            self.record(rec)
        self.seen += seen
        self.check()

    def check(self) -> None:
        """Raise DataError when bad / seen exceeds ``max_fraction`` (once ``min_seen`` were seen)."""
        if self.max_fraction is None or self.seen < self.min_seen or self.fraction <= self.max_fraction:
            return
        raise DataError(
            f"{self.total} of {self.seen} samples were bad ({self.fraction:.2%}), above the bound "
            f"data.max_bad_fraction={self.max_fraction:g} ({self.max_fraction:.2%}); worst reasons: "
            f"{self.worst()}"
        )

    def worst(self, n: int = 3) -> str:
        """The ``n`` most frequent reasons with counts and one example each, as one line."""
        parts = []
        for reason, count in self.counts.most_common(n):
            ex = next((r for r in self.examples if r.reason == reason), None)
            where = f" (e.g. key {ex.key!r} in {ex.source}{': ' + ex.detail if ex.detail else ''})" if ex else ""
            parts.append(f"{reason}={count}{where}")
        return "; ".join(parts) or "none"

    def summary(self) -> dict:
        """JSON-ready summary: seen, bad, fraction, per-reason counts and a few examples."""
        return {
            "seen": self.seen,
            "bad": self.total,
            "fraction": self.fraction,
            "reasons": dict(self.counts),
            "examples": [r.__dict__ for r in self.examples[:10]],
        }
