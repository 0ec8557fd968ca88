"""Shipped YAML: the files a checkout has at its top level are found from any working directory."""

from __future__ import annotations

from pathlib import Path

import softclip.train
from softclip.cli import main
from softclip.resources import data_file


def test_train_outside_a_checkout_uses_the_shipped_base_config(tmp_path, monkeypatch, capsys):
    """``softclip train ablations/base.yaml`` in a folder without ablations/ trains the packaged base.yaml."""
    monkeypatch.chdir(tmp_path)
    assert not Path("ablations").exists()
    seen = []

    def fake_train(cfg, run_dir=None, **kwargs):
        seen.append(cfg)
        return tmp_path / "run"

    monkeypatch.setattr(softclip.train, "train", fake_train)
    assert main(["train", "ablations/base.yaml", "--profile", "smoke", "--no-eval", "train.steps=3"]) == 0
    assert len(seen) == 1 and seen[0].train.steps == 3 and seen[0].profile == "smoke"
    assert data_file("ablations/base.yaml").is_file()
    assert main(["train", "ablations/nope.yaml", "--no-eval"]) == 2  # a missing file is still an error
    assert "nope.yaml" in capsys.readouterr().err


def test_data_synth_outside_a_checkout_uses_the_shipped_profiles(tmp_path, monkeypatch, capsys):
    """``softclip data synth --profile quick`` without ablations/ writes the shipped quick profile's data."""
    import softclip.data.synth
    from softclip.config import load_config

    monkeypatch.chdir(tmp_path)
    seen = []

    def fake_generate(out, spec, seed=0, **kwargs):
        seen.append(spec)
        return {"sets": {}, "object_types": 0}

    monkeypatch.setattr(softclip.data.synth, "generate", fake_generate)
    assert main(["data", "synth", "--out", "d", "--profile", "quick"]) == 0
    assert seen == [load_config(data_file("ablations/base.yaml"), [], profile="quick").data.synth]
    assert seen[0] != load_config(None, [], profile=None).data.synth  # not the schema's defaults


def test_train_evaluates_on_the_threads_the_run_trained_with(tmp_path, monkeypatch, capsys):
    """``softclip train RUN/config.yaml`` (``train.threads: 1`` recorded) scores the run on 1 thread, as the
    ablation job that trained it did, so its result JSON repeats; the count is restored after."""
    import torch
    from threadpoolctl import threadpool_info

    import softclip.evaluation

    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(softclip.train, "train", lambda cfg, run_dir=None, **kwargs: tmp_path / "run")
    monkeypatch.setattr(softclip.evaluation, "evaluate_checkpoint",
                        lambda run_dir, suite: seen.append((torch.get_num_threads(), {p['num_threads'] for p in threadpool_info()})) or {})  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "ablations/base.yaml", "--profile", "smoke", "train.threads=1"]) == 0
        assert seen == [(1, {1})] and torch.get_num_threads() == 2  # numpy's BLAS too: it decides rank ties
    finally:
        torch.set_num_threads(before)
