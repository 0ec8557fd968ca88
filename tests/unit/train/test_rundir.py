"""Run folder rules: finished runs are refused, overwrite clears, a different config cannot resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from softclip import checkpoint as ckpt
from softclip.config import Config, ConfigError
from softclip.train import rundir
from softclip.train.rundir import RunFinishedError, config_diff


def _with_checkpoint(run: Path, cfg: Config, step: int = 2) -> Path:
    assert rundir.prepare(run, cfg, overwrite=False) is None
    path = ckpt.checkpoint_path(run / "checkpoints", step)
    ckpt.save_checkpoint({"step": step}, path)
    return path


def test_fresh_folder_is_laid_out(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = Config.model_validate({"loss": {"beta": 0.2}, "data": {"batch_size": 64}})
    assert rundir.prepare(run, cfg, overwrite=False) is None
    assert (run / "checkpoints").is_dir() and (run / "eval").is_dir()
    saved = Config.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
    assert saved == cfg  # the resolved config, complete


def test_resume_picks_the_checkpoint_when_the_config_matches(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = Config()
    path = _with_checkpoint(run, cfg)
    moved = cfg.model_copy(update={"output_dir": "elsewhere"})  # a free key
    assert rundir.prepare(run, moved, overwrite=False) == path


def test_config_mismatch_names_the_keys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = Config()
    _with_checkpoint(run, cfg)
    other = Config.model_validate({"loss": {"beta": 0.5}, "train": {"steps": 7}})
    with pytest.raises(ConfigError) as err:
        rundir.prepare(run, other, overwrite=False)
    msg = str(err.value)
    assert "loss.beta: 0.3 -> 0.5" in msg and "train.steps: 2000 -> 7" in msg and "--overwrite" in msg
    assert "data.root" not in msg


def test_config_diff_skips_free_keys() -> None:
    a = {"name": "a", "launcher": {"name": "slurm"}, "data": {"workers": 0, "batch_size": 8}}
    b = {"name": "b", "launcher": {"name": "inprocess"}, "data": {"workers": 4, "batch_size": 16}}
    assert config_diff(a, b) == ["data.batch_size: 8 -> 16"]
    assert config_diff({"x": {"y": 1}}, {}) == ["x.y: 1 -> '<absent>'"]


def test_finished_run_is_refused_unless_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _with_checkpoint(run, Config())
    rundir.write_done(run, {"step": 2})
    with pytest.raises(RunFinishedError, match="finished run"):
        rundir.prepare(run, Config(), overwrite=False)
    assert rundir.prepare(run, Config(), overwrite=True) is None
    assert not (run / "done.json").exists() and ckpt.list_checkpoints(run / "checkpoints") == []


def test_overwrite_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no run"):
        rundir.prepare(tmp_path, Config(), overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_unusable_newer_checkpoints_are_set_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = Config()
    good = _with_checkpoint(run, cfg, step=2)
    bad = ckpt.checkpoint_path(run / "checkpoints", 4)
    ckpt.save_checkpoint({"step": 4}, bad)
    bad.write_bytes(b"garbage")
    assert rundir.prepare(run, cfg, overwrite=False) == good
    assert not bad.exists() and bad.with_name(bad.name + ".bad").exists()
    assert ckpt.list_checkpoints(run / "checkpoints") == [good]


def test_meta_keeps_history_on_resume(tmp_path: Path) -> None:
    rundir.write_meta(tmp_path, {"host": "a"}, None)
    rundir.write_meta(tmp_path, {"host": "b"}, 10)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["host"] == "a" and meta["resumes"] == [{"step": 10, "host": "b"}]
