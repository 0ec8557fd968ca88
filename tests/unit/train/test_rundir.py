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


# ------------------------------------------------------------------------- one owner, and only runs (issue 33)

ROOT = Path(__file__).resolve().parents[3]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _users_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("my: notes\n")
    (folder / "metrics.jsonl").write_text('{"step": 1, "mine": true}\n')
    return folder


def test_a_users_folder_with_config_and_metrics_is_refused_untouched(tmp_path: Path) -> None:
    folder = _users_folder(tmp_path)
    before = _snapshot(folder)
    for overwrite in (False, True):
        with pytest.raises(rundir.RunFolderError, match="holds no run") as err:
            rundir.prepare(folder, Config(), overwrite=overwrite)
        assert str(folder) in str(err.value) and "config.yaml, metrics.jsonl" in str(err.value)
        assert _snapshot(folder) == before


def test_the_cli_refuses_a_users_folder_with_exit_2_and_one_line(tmp_path: Path, capsys) -> None:
    from softclip.cli import main

    folder = _users_folder(tmp_path)
    before = _snapshot(folder)
    argv = ["train", str(ROOT / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir", str(folder), "--no-eval"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"softclip: error: {folder} is not empty and holds no run")
    assert _snapshot(folder) == before  # not even a lock file came and went


def test_stray_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(rundir.RunFolderError, match="notes.txt"):
        rundir.prepare(tmp_path, Config(), overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_file_as_run_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(rundir.RunFolderError, match="is a file, not a folder"):
        rundir.check_owner(tmp_path / "afile", Config())
    assert (tmp_path / "afile").read_text() == "x"


def test_a_run_of_another_config_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert rundir.prepare(run, Config(), overwrite=False) is None  # started, killed before its first checkpoint
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"loss.beta: 0.3 -> 0.5"):
        rundir.prepare(run, Config.model_validate({"loss": {"beta": 0.5}}), overwrite=False)
    assert _snapshot(run) == before
    assert rundir.prepare(run, Config(), overwrite=False) is None  # the same identity may go on


def test_the_recorded_identity_is_kept_across_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rundir.prepare(run, Config(), overwrite=False)
    record = json.loads((run / rundir.RUN).read_text())
    assert record["identity"] == rundir.identity(Config().to_dict())
    rundir.prepare(run, Config.model_validate({"output_dir": "elsewhere"}), overwrite=False)  # a free key
    assert json.loads((run / rundir.RUN).read_text()) == record
    assert rundir.identity({"name": "a", "loss": {"beta": 1}}) == rundir.identity({"name": "b", "loss": {"beta": 1}})
    assert rundir.identity({"loss": {"beta": 1}}) != rundir.identity({"loss": {"beta": 2}})


def test_a_legacy_run_without_run_json_is_still_recognised(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump(Config().to_dict()))
    assert rundir.prepare(run, Config(), overwrite=False) is None
    with pytest.raises(ConfigError, match="different config"):
        rundir.prepare(run, Config.model_validate({"seed": 3}), overwrite=False)


def test_eval_refuses_a_config_edited_after_training(tmp_path: Path, capsys) -> None:
    from softclip.cli import main

    run = tmp_path / "run"
    rundir.prepare(run, Config(), overwrite=False)
    rundir.check_unedited(run)  # untouched: fine
    edited = Config().to_dict()
    edited["loss"]["beta"] = 0.9
    edited["eval"]["batch_size"] = 7  # free keys (where it lives, how it is evaluated) may change
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(ConfigError, match=r"loss.beta: 0.3 -> 0.9") as err:
        rundir.check_unedited(run / "checkpoints" / "step_00000002.pt")
    assert "eval.batch_size" not in str(err.value)
    (run / "checkpoints" / "step_00000002.pt").write_bytes(b"x")
    assert main(["eval", str(run / "checkpoints" / "step_00000002.pt")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "was edited after the run was trained" in err_lines[0]
