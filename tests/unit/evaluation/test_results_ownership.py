"""Results belong to the checkpoint that made them: ``softclip eval`` of an intermediate checkpoint writes under
``eval/step_<N>/``; a finished run is scored only from its final checkpoint (damaged: an error naming it); a
checkpoint that does not fit the run's model is a one-line error naming the key. The run's own results stay
byte-identical in every case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from softclip.checkpoint import checkpoint_path, save_checkpoint
from softclip.cli import main
from softclip.config import Config

SUITE = Path(__file__).resolve().parents[3] / "eval" / "synthetic.yaml"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


@pytest.fixture()
def finished_run(tiny_model, smoke_root, tmp_path) -> Path:
    """A finished run: checkpoints at steps 3 and 5 (different weights), done.json naming step 5, evaluated."""
    model = tiny_model[0]
    run = tmp_path / "run"
    cfg = Config.model_validate({"name": "run", "model": {"name": "tiny-vit-32"}, "data": {"root": str(smoke_root)},
                                 "eval": {"suite": str(SUITE), "cache": False}})  # fmt: skip
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    early = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_checkpoint({"step": 3, "model": early}, checkpoint_path(run / "checkpoints", 3))
    save_checkpoint({"step": 5, "model": model.state_dict()}, checkpoint_path(run / "checkpoints", 5))
    (run / "done.json").write_text(json.dumps({"step": 5}))
    assert main(["eval", str(run)]) == 0
    return run


def test_an_intermediate_checkpoint_never_replaces_the_runs_results(finished_run):
    before = snapshot(finished_run / "eval")
    assert {json.loads(v)["checkpoint"].rsplit("/", 1)[-1] for v in before.values()} == {"step_00000005.pt"}
    assert main(["eval", str(checkpoint_path(finished_run / "checkpoints", 3))]) == 0
    assert snapshot(finished_run / "eval") == before
    step3 = snapshot(finished_run / "eval" / "step_3")
    assert set(step3) == set(before)
    assert all(json.loads(v)["checkpoint"].endswith("step_00000003.pt") for v in step3.values())
    assert step3["zeroshot.json"] != before["zeroshot.json"]
    # the final checkpoint named explicitly is the run's own: its results are reused, not written elsewhere
    assert main(["eval", str(checkpoint_path(finished_run / "checkpoints", 5))]) == 0
    assert snapshot(finished_run / "eval") == before and not (finished_run / "eval" / "step_5").exists()


def test_a_damaged_final_checkpoint_fails_naming_it(finished_run, capsys):
    before = snapshot(finished_run / "eval")
    final = checkpoint_path(finished_run / "checkpoints", 5)
    data = bytearray(final.read_bytes())
    data[len(data) // 2] ^= 0xFF
    final.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", str(finished_run), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(final) in err and "done.json names step 5" in err
    assert "Traceback" not in err
    assert snapshot(finished_run / "eval") == before  # no fallback to step 3
    (finished_run / "done.json").write_text("{not json")
    assert main(["eval", str(finished_run)]) == 1
    assert "done.json is damaged" in capsys.readouterr().err


def test_a_checkpoint_of_another_model_names_the_key(finished_run, capsys):
    before = snapshot(finished_run / "eval")
    cfg_path = finished_run / "config.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    data["model"]["name"] = "tiny-vit-32-p8"  # the same tower with patch 8: another conv1 shape
    cfg_path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["eval", str(finished_run), "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "does not fit model.name='tiny-vit-32-p8'" in err and "'clip.visual.positional_embedding' has shape" in err
    assert snapshot(finished_run / "eval") == before

