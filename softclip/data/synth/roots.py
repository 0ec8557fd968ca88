"""The SynthScenes copies a set of runs reads: one per ``data.root``, generated once before any run starts, so
parallel runs never race to write the same folder.

A run that changes ``data.synth`` but keeps its base config's ``data.root`` reads ``<root>-<hash of its spec>``
(:func:`own_root`): the caption-noise and detector-quality variants of an ablation each get their own copy, shared
by every seed and by the variants with the same spec.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softclip.config import ConfigError

if TYPE_CHECKING:
    from softclip.schema import DataConfig

SYNTH_DATA_SEED = 0  # one SynthScenes copy per data.root, shared by every training seed


def ensure(data: DataConfig, workers: int = 1) -> None:
    """Generate SynthScenes for a ``data`` config section under ``data.root`` unless it is there (other sources:
    nothing to do)."""
    if data.source == "synth":
        from softclip.data.synth import generate

        generate(data.root, data.synth, seed=SYNTH_DATA_SEED, workers=workers)


def own_root(data: DataConfig, base: DataConfig) -> DataConfig:
    """``data`` (a ``data`` section) with ``data.root`` = ``<root>-<spec hash>`` when it changes the base's
    ``data.synth`` but not its ``data.root``; else ``data`` itself."""
    if data.source != "synth" or data.root != base.root or data.synth == base.synth:
        return data
    digest = hashlib.sha256(json.dumps(data.synth.model_dump(mode="json"), sort_keys=True).encode())
    return data.model_copy(update={"root": f"{data.root}-{digest.hexdigest()[:8]}"})


def check_roots(runs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """``(name, data section as a dict)`` per run: runs sharing a generated ``data.root`` must ask for the same
    SynthScenes spec (else they would race to write different data there); a ConfigError names both."""
    seen: dict[str, tuple[Any, str]] = {}
    for name, data in runs:
        if data.get("source") == "synth":
            first = seen.setdefault(str(Path(data["root"]).resolve()), (data.get("synth"), name))
            if first[0] != data.get("synth"):
                raise ConfigError(
                    f"variants {first[1]!r} and {name!r} generate different SynthScenes data into the "
                    f"same data.root={data['root']!r}; give each data.synth setting its own data.root"
                )


def prepare(sections: Sequence[DataConfig]) -> list[str]:
    """Generate every SynthScenes ``data.root`` of ``sections`` once, with every core (nothing else runs yet)."""
    first: dict[str, DataConfig] = {}
    for data in sections:
        if data.source == "synth":
            first.setdefault(data.root, data)
    for data in first.values():
        ensure(data, workers=os.cpu_count() or 1)
    return list(first)
