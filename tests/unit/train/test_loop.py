"""End-to-end trainer runs in-process on the smoke synthetic set (seconds each, one thread)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from softclip import checkpoint as ckpt
from softclip.config import ConfigError, DataConfig, ModelConfig
from softclip.data.loader import build_train_loader
from softclip.identity import run_identity
from softclip.models import build_model
from softclip.objective import SoftCLIPObjective
from softclip.train import NonFiniteLossError, RunFinishedError, rundir, train
from softclip.train.metrics import TIMING_KEYS, read_metrics

from .conftest import smoke_config

TRAIN_KEYS = {
    "kind",
    "step",
    "epoch",
    "samples",
    "lr",
    "loss",
    "nce_loss",
    "soft_loss",
    "re_loss",
    "logit_scale",
    "grad_norm",
    "samples_per_s",
    "skipped_steps",
    "data_bad",
}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(path)["model"]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _untimed(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(path)]


def _fixed_batch_evaluator(data_root: Path):
    """evaluate(model, step) -> the plain CLIP loss on one fixed batch of 32 training pairs."""
    _, preprocess, _, tokenizer = build_model(ModelConfig(name="tiny-vit-32"))
    loader = build_train_loader(
        DataConfig(source="wds", root=str(data_root), sidecars=False),
        preprocess=preprocess,
        tokenizer=tokenizer,
        batch_size=32,
        roi_dim=32,
        seed=123,
    )
    batch = next(iter(loader))
    clip_loss = SoftCLIPObjective(target="hard", soft_weight=0.0, re_weight=0.0)

    def evaluate(model: torch.nn.Module, step: int) -> dict[str, float]:
        assert not model.training
        out = model({k: batch[k] for k in ("image", "text")}, image_source="image", text_source="text")
        return {"fixed_loss": clip_loss(**out)["loss"].item()}

    return evaluate


def test_smoke_run_learns_and_lays_out_the_folder(smoke_data: Path, tmp_path: Path) -> None:
    cfg = smoke_config(
        smoke_data,
        {
            "data": {"batch_size": 16},
            "train": {
                "steps": 20,
                "ckpt_every": 5,
                "keep_checkpoints": 2,
                "eval_every": 4,
                "best_mode": "min",
            },
        },
    )
    run = train(cfg, tmp_path / "run", evaluate=_fixed_batch_evaluator(smoke_data))
    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert all(TRAIN_KEYS <= r.keys() for r in steps)
    assert [r["step"] for r in evals] == [4, 8, 12, 16, 20]
    losses = [r["fixed_loss"] for r in evals]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, (
        losses
    )  # it learns (on a fixed batch, so no batch noise)
    assert steps[0]["lr"] == pytest.approx(2.5e-4) and steps[-1]["lr"] < steps[2]["lr"]
    assert steps[-1]["samples"] == 20 * 16
    assert all(0 < r["logit_scale"] <= 100 and math.isfinite(r["grad_norm"]) for r in steps)
    # checkpoints: the newest two, verified; best.pt from the best evaluation
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [
        "step_00000015.pt",
        "step_00000020.pt",
    ]
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == evals[losses.index(min(losses))]["step"] and "optimizer" not in best
    done = json.loads((run / "done.json").read_text())
    assert (
        done["step"] == 20 and done["best"]["metric"] == "fixed_loss" and done["best"]["value"] == min(losses)
    )
    assert (
        json.loads((run / "eval" / "step_00000020.json").read_text())["metrics"]["fixed_loss"] == losses[-1]
    )
    meta = json.loads((run / "meta.json").read_text())
    assert (
        meta["seed"] == 0
        and meta["torch_threads"] == 1
        and torch.__version__.startswith(meta["versions"]["torch"])
    )
    assert (run / "config.yaml").is_file()
    with pytest.raises(RunFinishedError, match="finished run"):
        train(cfg, run)


def test_keep_when_done_prunes_once_the_run_has_finished(smoke_data: Path, tmp_path: Path) -> None:
    cfg = smoke_config(
        smoke_data,
        {"train": {"steps": 6, "ckpt_every": 2, "keep_checkpoints": 2, "keep_when_done": 1, "eval_every": 3}},
    )
    run = train(cfg, tmp_path / "run", evaluate=_fixed_batch_evaluator(smoke_data))
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000006.pt"]
    assert not (run / "checkpoints" / "step_00000004.json").exists()  # its record went with it
    assert (run / "checkpoints" / "best.pt").is_file() and json.loads((run / "done.json").read_text())["step"] == 6
    assert ckpt.load_checkpoint(run / "checkpoints" / "step_00000006.pt")["step"] == 6


def _poison(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """Make the objective's loss NaN on the given (1-based) calls."""
    original = SoftCLIPObjective.forward
    count = {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] in calls:
            out["soft_loss"] = out["soft_loss"] * float("nan")
            out["loss"] = out["loss"] + out["soft_loss"]
        return out

    monkeypatch.setattr(SoftCLIPObjective, "forward", forward)


def test_nan_stop_names_step_and_terms_and_keeps_the_checkpoint(
    smoke_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison(monkeypatch, {3})
    cfg = smoke_config(smoke_data, {"train": {"steps": 4, "ckpt_every": 2, "nan_policy": "stop"}})
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, tmp_path / "run")
    msg = str(err.value)
    assert "step 3" in msg and "soft_loss=nan" in msg and "loss=nan" in msg and "step_00000002.pt" in msg
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step_00000002.pt"]
    assert ckpt.load_checkpoint(folder / "step_00000002.pt")["step"] == 2
    assert not (tmp_path / "run" / "done.json").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


def test_nan_skip_counts_and_bounds(
    smoke_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison(monkeypatch, {2})
    cfg = smoke_config(
        smoke_data, {"train": {"steps": 4, "ckpt_every": 4, "nan_policy": "skip", "max_skipped_steps": 1}}
    )
    run = train(cfg, tmp_path / "run")
    lines = read_metrics(run / "metrics.jsonl")
    assert [r["skipped_steps"] for r in lines] == [0, 1, 1, 1]
    assert lines[1]["loss"] is None and lines[2]["loss"] is not None
    assert json.loads((run / "done.json").read_text())["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in _weights(run / "checkpoints" / "step_00000004.pt").values())
    monkeypatch.undo()
    _poison(monkeypatch, {1, 2})
    with pytest.raises(NonFiniteLossError, match="max_skipped_steps=1"):
        train(cfg, tmp_path / "run2")


def test_truncated_checkpoint_falls_back_and_resume_is_exact(
    smoke_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = smoke_config(smoke_data, {"train": {"steps": 3, "ckpt_every": 2, "log_every": 1}})
    run = train(cfg, tmp_path / "run")
    final = run / "checkpoints" / "step_00000003.pt"
    expected, expected_metrics = _weights(final), _untimed(run / "metrics.jsonl")
    (run / "done.json").unlink()  # as if killed while writing the last checkpoint
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 3])
    with caplog.at_level(logging.INFO, logger="softclip.train"):
        train(cfg, run)
    assert "step_00000003.pt" in caplog.text and "falling back" in caplog.text
    assert "resumed from" in caplog.text and "step_00000002.pt at step 2" in caplog.text
    assert _same_weights(_weights(final), expected)
    assert _untimed(run / "metrics.jsonl") == expected_metrics
    assert (final.parent / (final.name + ".bad")).exists()


def test_resume_refuses_a_different_config(smoke_data: Path, tmp_path: Path) -> None:
    cfg = smoke_config(smoke_data, {"train": {"steps": 1, "ckpt_every": 1}})
    run = train(cfg, tmp_path / "run")
    (run / "done.json").unlink()
    other = smoke_config(smoke_data, {"train": {"steps": 1, "ckpt_every": 1}, "loss": {"beta": 0.1}})
    with pytest.raises(ConfigError, match=r"loss\.beta: 0\.3 -> 0\.1"):
        train(other, run)
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(ConfigError, match=r"loss\.beta: 0\.3 -> 0\.1"):  # no checkpoint: still another run's folder
        train(other, run)
    train(other, run, overwrite=True)  # asked for: it starts again


def test_accumulation_matches_the_full_batch_in_the_loop(smoke_data: Path, tmp_path: Path) -> None:
    over = {"train": {"steps": 2, "ckpt_every": 2}, "optim": {"grad_clip": 0.0}}
    full = train(smoke_config(smoke_data, over), tmp_path / "full")
    over["optim"]["accum_steps"] = 2  # two micro-batches of 4 = the same 8 samples per step
    accum = train(smoke_config(smoke_data, over), tmp_path / "accum")
    a, b = (
        _weights(full / "checkpoints" / "step_00000002.pt"),
        _weights(accum / "checkpoints" / "step_00000002.pt"),
    )
    for key in a:
        # Adam turns rounding noise in zero-expectation gradients (attention key biases) into lr-sized steps
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=0.1 * 5e-4, msg=key)
    la, lb = read_metrics(full / "metrics.jsonl"), read_metrics(accum / "metrics.jsonl")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-5)


def test_batch_must_split_evenly(smoke_data: Path, tmp_path: Path) -> None:
    cfg = smoke_config(smoke_data, {"optim": {"accum_steps": 3}})
    with pytest.raises(ConfigError, match="data.batch_size=8"):
        train(cfg, tmp_path / "run")


def test_the_recorded_config_holds_the_thread_count_it_trained_with(smoke_data: Path, tmp_path: Path) -> None:
    """``train.threads: 0`` (torch's default) is resolved into config.yaml and run.json, so retraining from the
    recorded config uses the same count; the count is out of the run's identity (a speed knob), so the
    recorded run still resumes and is found by planners that ask for 0."""
    cfg = smoke_config(smoke_data, {"train": {"threads": 0, "steps": 2}})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = train(cfg, tmp_path / "run")
    finally:
        torch.set_num_threads(before)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["train"]["threads"] == 2
    assert json.loads((run / "run.json").read_text())["config"]["train"]["threads"] == 2
    assert rundir.config_diff(recorded, cfg.to_dict()) == []
    assert run_identity(recorded) == run_identity(cfg.to_dict())
