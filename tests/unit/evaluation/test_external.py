"""``softclip eval --arch A --weights F``: open_clip weights (plain, or open_clip_train's ``module.``-prefixed
checkpoint) score exactly like the same weights evaluated through a run folder; a file of another
architecture, a missing file or an unreadable one is a one-line error naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from softclip import cli
from softclip.checkpoint import checkpoint_path, save_checkpoint
from softclip.config import ModelConfig, load_config
from softclip.evaluation import evaluate_checkpoint
from softclip.evaluation.external import evaluate_weights
from softclip.models import build_model

ROOT = Path(__file__).resolve().parents[3]
SUITE = str(ROOT / "eval" / "synthetic.yaml")
BENCH = ["zeroshot", "retrieval"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """A random tiny-vit-32 saved three ways: a run folder, a plain state dict, an open_clip_train checkpoint."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    model, *_ = build_model(ModelConfig(name="tiny-vit-32"))
    run = root / "run"
    cfg = load_config(str(ROOT / "ablations" / "base.yaml"), profile="smoke")
    assert cfg.model.name == "tiny-vit-32"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_checkpoint({"step": 1, "model": model.state_dict()}, checkpoint_path(run / "checkpoints", 1))
    plain = root / "plain.pt"
    torch.save(model.clip.state_dict(), plain)
    train = root / "epoch_1.pt"
    sd = {f"module.{k}": v for k, v in model.clip.state_dict().items()}
    torch.save({"epoch": 1, "name": "x", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, train)
    return {"run": run, "plain": plain, "train": train}


def records(folder: Path) -> dict[str, dict]:
    return {b: json.loads((folder / f"{b}.json").read_text()) for b in BENCH}


def test_open_clip_weights_score_like_the_run(weights, smoke_root, tmp_path):
    ours = evaluate_checkpoint(weights["run"], SUITE, data_root=smoke_root, out_dir=tmp_path / "run",
                               benchmarks=BENCH, device="cpu")  # fmt: skip
    for kind in ("plain", "train"):
        got = evaluate_weights("tiny-vit-32", weights[kind], SUITE, tmp_path / kind, data_root=smoke_root,
                               benchmarks=BENCH, device="cpu")  # fmt: skip
        assert got == ours, kind
        theirs, mine = records(tmp_path / kind), records(tmp_path / "run")
        for b in BENCH:
            assert set(theirs[b]) == set(mine[b]) and theirs[b]["metrics"] == mine[b]["metrics"]
            assert theirs[b]["config_hash"] == "open_clip:tiny-vit-32"


def test_cli_scores_open_clip_train_checkpoint(weights, smoke_root, tmp_path, capsys):
    suite = tmp_path / "zs.yaml"
    spec = yaml.safe_load(Path(SUITE).read_text())
    spec["benchmarks"] = {"zeroshot": spec["benchmarks"]["zeroshot"]}
    suite.write_text(yaml.safe_dump(spec))
    argv = ["eval", "--arch", "tiny-vit-32", "--weights", str(weights["train"]), "--suite", str(suite),
            "--out", str(tmp_path / "out"), "--data-root", str(smoke_root)]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads((tmp_path / "out" / "zeroshot.json").read_text())["run"] == "epoch_1"
    assert capsys.readouterr().out.startswith("zeroshot: top1=")


@pytest.mark.parametrize("kind", ["plain", "train"])
def test_other_architecture_fails_naming_the_first_key(weights, tmp_path, capsys, kind):
    argv = ["eval", "--arch", "tiny-rn-32", "--weights", str(weights[kind]), "--suite", SUITE, "--out", str(tmp_path)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(weights[kind]) in err and "'tiny-rn-32'" in err
    saved = build_model(ModelConfig(name="tiny-vit-32"))[0].clip.state_dict()
    first = next(k for k, v in build_model(ModelConfig(name="tiny-rn-32"))[0].clip.state_dict().items()
                 if k not in saved or saved[k].shape != v.shape)  # fmt: skip
    assert f"'{first}'" in err


def test_missing_and_unreadable_files_are_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    for path, words in ((tmp_path / "none.pt", "not found"), (junk, "cannot be read")):
        argv = ["eval", "--arch", "tiny-vit-32", "--weights", str(path), "--suite", SUITE, "--out", str(tmp_path)]
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and words in err


def test_arch_needs_weights_and_out(capsys):
    assert cli.main(["eval", "--arch", "tiny-vit-32"]) == 2
    assert "--weights" in capsys.readouterr().err
