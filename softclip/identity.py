"""What makes two runs (or two sweeps) the same: a config's identity, its flat form and its short hash.

A run's identity is its resolved config without where it lives, how it launches, and the implementation knobs
that change speed, not results (``train.host_memory``, ``loss.impl``, ...: ``RESUME_FREE_KEYS`` plus
:data:`SPEED_KEYS`). Its evaluation suite stays in (an ablation's results belong to its suite).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: keys a run may change and still resume (where it lives, how it launches and evaluates, speed knobs)
RESUME_FREE_KEYS = ("name", "output_dir", "profile", "launcher", "eval", "data.workers", "train.tensorboard",
                   "train.host_memory", "train.keep_when_done")
#: implementation knobs outside ``RESUME_FREE_KEYS`` that do not change what a run computes, only its floating-point
#: rounding (a run's ``config.yaml`` records the thread count it trained with: ``train.threads: 0`` is resolved)
SPEED_KEYS = ("loss.impl", "train.threads")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"beta": 0.3}}`` -> ``{"loss.beta": 0.3}`` (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def free_keys() -> tuple[str, ...]:
    """Dotted keys (and their sub-keys) left out of a run's identity."""
    return (*(k for k in RESUME_FREE_KEYS if k != "eval"), *SPEED_KEYS)


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The flat config without :func:`free_keys` (sorted by key)."""
    free = free_keys()
    flat = flatten(config)
    return {k: flat[k] for k in sorted(flat) if not any(k == f or k.startswith(f + ".") for f in free)}


def identity_hash(identity: dict[str, Any], length: int = 12) -> str:
    """A short stable hash of an identity (JSON with sorted keys)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def identity_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs between two (nested or flat) identities."""
    a, b = flatten(saved), flatten(current)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]  # fmt: skip
