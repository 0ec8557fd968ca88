"""What the report reads from a run, as data: :class:`Run`, :class:`Collection`, :class:`Skipped` and the
report's error (a leaf module of ``report/``: the readers in :mod:`~softclip.report.discover` and
:mod:`~softclip.report.saved` build these)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softclip.errors import SoftclipError


class ReportError(SoftclipError, ValueError):
    """Bad report input: no run folders, an unknown baseline or metric. The message names the paths/keys."""

    exit_code = 2
    label = "report error"


@dataclass(frozen=True)
class Skipped:
    """A file (or path) left out of the report, and why."""

    path: str
    reason: str


@dataclass
class Run:
    """One run folder as the report sees it. ``config`` is flattened to dotted keys."""

    path: Path
    ablation: str
    variant: str
    label: str
    seed: int
    name: str
    order: float
    baseline: str | None
    factors: dict[str, Any]
    config: dict[str, Any]
    results: dict[str, dict[str, float]]
    meta_source: str
    #: what the ablation runner recorded for this run (its manifest record, or an older ``ablation.json``)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class Collection:
    """Everything :func:`load_runs` found: the runs, the skipped files and the inputs searched."""

    runs: list[Run]
    skipped: list[Skipped] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_number(value: Any) -> bool:
    """A JSON number (bools excluded); NaN counts, it is reported as missing later."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_order(value: Any) -> float:
    return float(value) if is_number(value) else math.nan
