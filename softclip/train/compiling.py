"""``train.compile``: whether and what to compile with torch.compile (TorchInductor).

``true`` / ``false`` decide; ``auto`` compiles on the devices in :data:`AUTO_MIN_STEPS` once a run has that many
steps, and stays eager elsewhere. On this project's CPU compiling is not a reliable win for the tiny towers:
1.19x on the old quick step (tiny-vit-32-p8, batch 64) but 0.92x per CPU-second on the throughput benchmark's
(tiny-vit-32, batch 32; reports/perf/train.md), so ``auto`` leaves CPU runs eager. Only the two towers are
compiled, in place (``nn.Module.compile``): the state dict, the checkpoints and the Python glue (sources,
objective, trimmed text) stay as they are, so exact resume holds (a resumed process compiles the same graphs).

The Inductor cache (``TORCHINDUCTOR_CACHE_DIR``) defaults to one folder under the runs root, so the runs of an
ablation or sweep on one machine reuse each other's compiled kernels instead of paying the warm-up each.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

AUTO_MIN_STEPS = {"cuda": 500}  # `auto` compiles from this many steps; other devices (CPU) stay eager
CACHE_DIR_NAME = ".inductor-cache"


def should_compile(setting: bool | str, steps: int, device: torch.device) -> bool:
    """The decision of ``train.compile`` (``True``, ``False`` or ``"auto"``) for a run of ``steps`` steps."""
    if setting == "auto":
        threshold = AUTO_MIN_STEPS.get(device.type)
        return threshold is not None and steps >= threshold
    return bool(setting)


def share_inductor_cache(runs_root: str | Path) -> Path:
    """Point TorchInductor's cache at ``runs_root/.inductor-cache`` unless the environment already chose one."""
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen:
        return Path(chosen)
    path = Path(runs_root) / CACHE_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def compile_towers(clip: nn.Module) -> list[str]:
    """Compile the vision tower and the text transformer of an open_clip model in place; returns their names."""
    done = []
    for name in ("visual", "transformer", "text"):
        module = getattr(clip, name, None)
        if isinstance(module, nn.Module) and not (name == "text" and hasattr(clip, "transformer")):
            module.compile()
            done.append(name)
    return done
