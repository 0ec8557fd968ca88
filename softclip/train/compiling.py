"""``train.compile``: whether and what to compile with torch.compile (TorchInductor).

``true`` / ``false`` decide; ``auto`` compiles when the run is long enough to repay the warm-up: on a CPU the
towers of the quick model compile in ~20 s and then run ~1.2x faster (reports/perf/train.md), which pays from
about :data:`AUTO_MIN_STEPS` steps on; on CUDA the same rule with its own threshold. Only the two towers are
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

AUTO_MIN_STEPS = {"cpu": 1000, "cuda": 500}  # below this many steps `auto` stays eager
CACHE_DIR_NAME = ".inductor-cache"


def should_compile(setting: bool | str, steps: int, device: torch.device) -> bool:
    """The decision of ``train.compile`` (``True``, ``False`` or ``"auto"``) for a run of ``steps`` steps."""
    if setting == "auto":
        return steps >= AUTO_MIN_STEPS.get(device.type, AUTO_MIN_STEPS["cuda"])
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
