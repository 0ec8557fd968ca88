"""Shared fixtures: a tiny SynthScenes set (smoke preset, shrunk further) and a random tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four SynthScenes evaluation sets in their real formats (generated once per session)."""
    from softclip.data.synth import generate
    from softclip.data.synth.spec import SynthConfig

    root = tmp_path_factory.mktemp("synth") / "smoke"
    spec = SynthConfig.preset(
        "smoke", n_train=16, samples_per_shard=16, n_zeroshot_per_class=2, n_retrieval_images=20,
        n_instance_distractors=8, n_copydays_originals=4, n_copydays_distractors=8, n_whitening=8,
        copydays_jpeg_qualities=(50,), copydays_crop_pcts=(30,),
    )
    generate(root, spec, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_model():
    """(model, preprocess_val, tokenizer) of a randomly initialised tiny-vit-32."""
    from softclip.config import ModelConfig
    from softclip.models import build_model

    torch.manual_seed(0)
    model, _, preprocess, tokenizer = build_model(ModelConfig(name="tiny-vit-32"))
    return model.eval(), preprocess, tokenizer
