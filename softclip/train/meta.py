"""Provenance written to ``meta.json``: git SHA, package versions, host, seed, threads, device."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "softclip",
    "torch",
    "torchvision",
    "open_clip_torch",
    "numpy",
    "webdataset",
    "pydantic",
    "faiss-cpu",
)
_REPO = Path(__file__).resolve().parents[2]


def git_sha(root: str | Path = _REPO) -> str | None:
    """HEAD's commit of the repository holding ``root`` (``-dirty`` appended for local changes), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    """Device type and, for CUDA, name, capability and memory."""
    info: dict[str, Any] = {"type": device.type, "index": device.index}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gb=props.total_memory / 2**30,
            cuda=torch.version.cuda,
        )
    return info


def collect_meta(seed: int, device: torch.device, world_size: int, precision: str) -> dict[str, Any]:
    """Everything ``meta.json`` records at the start of a run."""
    return {
        "git_sha": git_sha(),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
        "precision": precision,
        "device": device_info(device),
        "cpu_count": os.cpu_count(),
    }
