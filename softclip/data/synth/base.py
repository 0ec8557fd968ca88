"""The contract of one output set (train shards, zero-shot, retrieval, instance, copydays) and their registry.

A set splits its work into picklable ``units`` (planned in the parent process), renders each unit into the
staging folder independently (in any process, any order) and ``finalize``s the index files from the units'
results in unit order. Because every item draws from its own seeded stream, the bytes never depend on the
number of workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softclip.data.synth.spec import SynthConfig
from softclip.registry import Registry

Units = Callable[[SynthConfig, int], list[Any]]
RunUnit = Callable[[SynthConfig, int, Path, Any], Any]
Finalize = Callable[[SynthConfig, int, Path, list[Any]], dict[str, Any]]


@dataclass(frozen=True)
class OutputSet:
    """One output set: ``units(spec, seed)``, ``run_unit(spec, seed, root, unit)``, ``finalize(spec, seed, root, results)``.

    ``finalize`` returns the set's summary for the dataset card.
    """

    name: str
    folder: str
    units: Units
    run_unit: RunUnit
    finalize: Finalize


SETS: Registry[OutputSet] = Registry("data.synth.set")


def register(output_set: OutputSet) -> OutputSet:
    """Register ``output_set`` under its name."""
    return SETS.register(output_set.name)(output_set)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering range(n) in pieces of at most ``size``."""
    return [(a, min(n, a + size)) for a in range(0, n, max(1, size))]
