"""Shared fixtures for the trainer tests: the smoke SynthScenes set (generated once) and tiny configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from softclip.config import Config, deep_merge
from softclip.data.synth import SynthConfig, generate
from softclip.data.synth.roots import SYNTH_DATA_SEED


def smoke_config(data_root: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """A seconds-long run: tiny-vit-32 on the smoke synthetic set, one thread, batch 8."""
    base = {
        "name": "test",
        "seed": 0,
        "model": {"name": "tiny-vit-32"},
        "data": {
            "source": "synth",
            "root": str(data_root),
            "batch_size": 8,
            "shuffle_buffer": 64,
            "synth": SynthConfig.preset("smoke").model_dump(mode="json"),
        },
        "optim": {"warmup_steps": 2, "lr": 5e-4},
        "train": {"steps": 4, "log_every": 1, "ckpt_every": 2, "threads": 1, "device": "cpu"},
    }
    return Config.model_validate(deep_merge(base, overrides or {}))


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "smoke"
    generate(root, SynthConfig.preset("smoke"), seed=SYNTH_DATA_SEED)
    return root
