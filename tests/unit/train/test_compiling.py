"""``train.compile``: the auto rule, the shared Inductor cache, and towers compiled in place (state dict kept)."""

from __future__ import annotations

import pytest
import torch

from softclip.config import ModelConfig, TrainConfig
from softclip.models import build_model
from softclip.train.compiling import AUTO_MIN_STEPS, compile_towers, share_inductor_cache, should_compile

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_compiles_only_runs_long_enough_to_repay_the_warm_up():
    assert not should_compile("auto", 10**6, CPU)  # measured no reliable win on CPU: eager
    assert not should_compile("auto", AUTO_MIN_STEPS["cuda"] - 1, CUDA)
    assert should_compile("auto", AUTO_MIN_STEPS["cuda"], CUDA)
    assert should_compile(True, 1, CPU) and not should_compile(False, 10**6, CUDA)
    assert TrainConfig(compile="auto").compile == "auto" and TrainConfig().compile is False
    with pytest.raises(ValueError):
        TrainConfig(compile="sometimes")


def test_the_cache_is_shared_under_the_runs_root_unless_chosen(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    path = share_inductor_cache(tmp_path)
    assert path == tmp_path / ".inductor-cache" and path.is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert share_inductor_cache(tmp_path / "other") == tmp_path / "mine"


def test_compiling_the_towers_keeps_the_state_dict_keys():
    model = build_model(ModelConfig(name="tiny-vit-32"))[0]
    keys = list(model.state_dict())
    assert compile_towers(model.clip) == ["visual", "transformer"]
    assert list(model.state_dict()) == keys  # checkpoints and resume are unchanged by compiling
