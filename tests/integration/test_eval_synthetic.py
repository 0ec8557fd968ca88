"""The evaluation harness end to end on the smoke SynthScenes sets: a random tiny model through ``run_suite`` and
a briefly trained run through ``evaluate_checkpoint`` and the ``softclip eval`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from softclip.evaluation import run_suite
from softclip.evaluation.harness import RESULT_KEYS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "eval" / "synthetic.yaml"
BENCHMARKS = ("zeroshot", "retrieval", "instance", "copydays")


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    from softclip.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "smoke"
    generate(root, SynthConfig.preset("smoke"), seed=0)
    return root


def check_results(out_dir: Path, run: str) -> dict[str, dict]:
    records = {}
    for bench in BENCHMARKS:
        record = json.loads((out_dir / f"{bench}.json").read_text())
        assert set(RESULT_KEYS) <= set(record) and record["run"] == run and record["benchmark"] == bench
        assert record["n_items"] > 0 and record["metrics"]
        for key, value in record["metrics"].items():
            assert math.isfinite(value), key
            if key.endswith("_rank"):
                assert value >= 1
            elif key == "rsum":
                assert 0 <= value <= 600
            elif key != "val_nce_loss":
                assert 0 <= value <= 100, (key, value)
        records[bench] = record
    return records


def test_random_model_full_smoke_suite(smoke_data, tmp_path):
    import torch

    from softclip.config import ModelConfig
    from softclip.models import build_model

    torch.manual_seed(0)
    model, _, preprocess, tokenizer = build_model(ModelConfig(name="tiny-vit-32"))
    results = run_suite(model, preprocess, tokenizer, SUITE, data_root=smoke_data, out_dir=tmp_path, run="random",
                        checkpoint=None, config_hash=None, git_sha=None, cache_dir=tmp_path / "cache")  # fmt: skip
    records = check_results(tmp_path, "random")
    assert {b: r["metrics"] for b, r in records.items()} == results


def test_trained_run_through_evaluate_checkpoint_and_cli(smoke_data, tmp_path, monkeypatch):
    from softclip.cli import main
    from softclip.config import load_config
    from softclip.evaluation import evaluate_checkpoint
    from softclip.train import train

    cfg = load_config(ROOT / "ablations" / "base.yaml", profile="smoke",
                      overrides=[f"data.root={smoke_data}", f"output_dir={tmp_path}", "train.steps=20",
                                 "train.ckpt_every=10", "train.device=cpu", "name=trained"])  # fmt: skip
    run_dir = train(cfg, run_dir=tmp_path / "trained")
    results = evaluate_checkpoint(run_dir, SUITE)
    records = check_results(run_dir / "eval", "trained")
    recorded = load_config(run_dir / "config.yaml")  # train.threads: 0 resolved to the count it trained with
    assert recorded.train.threads == torch.get_num_threads() and recorded.hash() != cfg.hash()
    assert records["retrieval"]["config_hash"] == recorded.hash()
    assert results["retrieval"]["val_nce_loss"] > 0
    stamps = {b: (run_dir / "eval" / f"{b}.json").stat().st_mtime_ns for b in BENCHMARKS}
    monkeypatch.chdir(ROOT)
    assert main(["eval", str(run_dir), "--suite", str(SUITE)]) == 0  # up to date: a no-op
    assert {b: (run_dir / "eval" / f"{b}.json").stat().st_mtime_ns for b in BENCHMARKS} == stamps
    assert main(["eval", str(run_dir), "--suite", str(SUITE), "--force"]) == 0
    assert json.loads((run_dir / "eval" / "zeroshot.json").read_text())["metrics"] == results["zeroshot"]
