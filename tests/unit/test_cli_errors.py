"""Bad input and hostile environments give one line and an exit code, never a traceback (``-v`` adds it), and
leave nothing half-written: disk full and read-only folders (injected), an unreachable PostgreSQL storage, a
key given twice, a missing ``base:``, ``--n-trials -3``; the sweep's copy beside its results has no password."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from softclip import atomic
from softclip.cli import describe_error, main

ROOT = Path(__file__).resolve().parents[2]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_disk_full_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic.write_json(target, {"old": 1})
    before = target.read_bytes()

    def full(f):
        f.write(b'{"new": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    with pytest.raises(OSError) as err:
        atomic.atomic_write(target, full)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no .tmp left
    code, message = describe_error(err.value)
    assert code == 1 and message == f"error: cannot write {target}: No space left on device"


def test_read_only_run_folder_through_the_cli(tmp_path, monkeypatch, capsys):
    """`softclip train --run-dir` where writes fail (EROFS, injected: root ignores permission bits)."""
    run = tmp_path / "run"
    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kw):  # noqa: A002 - mkstemp's own keyword
        if dir is not None and Path(dir).resolve().is_relative_to(run.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    argv = ["train", str(ROOT / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir", str(run), "--no-eval"]
    assert main(argv) == 1
    assert one_line(capsys) == f"softclip: error: cannot write {run / 'run.json'}: Read-only file system"
    assert sorted(p.name for p in run.iterdir()) == []  # run.json is written first: no lock, no temporary left


def test_verbose_adds_the_traceback(capsys):
    assert main(["train", str(ROOT / "ablations" / "missing.yaml")]) == 2
    assert "missing.yaml" in one_line(capsys)
    assert main(["-v", "train", str(ROOT / "ablations" / "missing.yaml")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_key_given_twice_is_an_error(capsys):
    assert main(["config", str(ROOT / "ablations" / "base.yaml"), "loss.beta=0.1", "loss.beta=0.2"]) == 2
    err = one_line(capsys)
    assert "'loss.beta' is given twice" in err and "loss.beta=0.1" in err and "loss.beta=0.2" in err


def test_a_missing_base_names_the_file_that_references_it(tmp_path, capsys):
    child = tmp_path / "child.yaml"
    child.write_text("base: nowhere.yaml\n")
    assert main(["config", str(child)]) == 2
    err = one_line(capsys)
    assert str(child) in err and "nowhere.yaml" in err


def sweep_file(tmp_path: Path, **fields) -> Path:
    data = {"name": "s", "base": str(ROOT / "ablations" / "base.yaml"), "trial": "noop",
            "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9}},
            "objective": {"metric": "noop/value", "direction": "maximize"}, "n_trials": 1,
            "output_dir": str(tmp_path / "runs"), **fields}  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_negative_n_trials_is_refused(tmp_path, capsys):
    assert main(["sweep", str(sweep_file(tmp_path)), "--launcher", "inprocess", "--n-trials", "-3"]) == 2
    assert "--n-trials=-3" in one_line(capsys)


def test_unreachable_postgres_is_one_line_with_the_password_hidden(tmp_path, capsys):
    url = "postgresql://softclip:s3cret@127.0.0.1:1/softclip"  # port 1: connection refused at once
    path = sweep_file(tmp_path, storage=url)
    for argv in (["sweep", str(path), "--launcher", "inprocess"], ["sweep", str(path), "--status"]):
        assert main(argv) == 1
        err = one_line(capsys)
        assert "postgresql://softclip:***@127.0.0.1:1/softclip" in err and "s3cret" not in err
    copies = list((tmp_path / "runs").rglob("sweep.yaml"))
    assert copies and all("s3cret" not in p.read_text() for p in copies)
    assert all(yaml.safe_load(p.read_text())["storage"].endswith(":***@127.0.0.1:1/softclip") for p in copies)


def test_sweep_copy_of_a_sqlite_sweep_is_unchanged(tmp_path):
    path = sweep_file(tmp_path)
    assert main(["sweep", str(path), "--launcher", "inprocess"]) == 0
    copy = next((tmp_path / "runs").rglob("sweep.yaml"))
    assert yaml.safe_load(copy.read_text())["storage"] is None
    assert json.dumps(yaml.safe_load(copy.read_text()))  # plain data


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["loss.contrastive=sigmod"], "loss.contrastive='sigmod' must be one of: infonce, sigmoid (did you mean 'sigmoid'?)"),
        (["loss.momentum=1.5"], "loss.momentum=1.5 is out of range; allowed: >= 0.0 and < 1.0"),
        (["loss.contrastive=sigmoid"], "loss: loss.re_weight=0.5 with loss.contrastive=sigmoid"),
        (["loss.target=momentum", "loss.pairing=mean"], "loss: loss.pairing=mean with loss.target=momentum"),
    ],
)  # fmt: skip
def test_the_new_loss_keys_fail_in_one_line_naming_the_key(overrides, expected, capsys):
    assert main(["config", str(ROOT / "ablations" / "base.yaml"), *overrides]) == 2
    err = one_line(capsys)
    assert expected in err and "{" not in err, err  # the section's values are not dumped


# ------------------------------------------------- every failure of a write is one line naming the path (issue 33)

TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file "
                          "data/0: file write failed")  # fmt: skip
WRITE_FAILURES = {  # what libraries raise when a write fails, and the reason the line must give
    "torch_save_disk_full": (TORCH_FULL, "PytorchStreamWriter failed writing file data/0: file write failed"),
    "oserror_without_errno": (OSError("encoder error -2 when writing image file"),
                              "encoder error -2 when writing image file"),  # fmt: skip
    "enospc": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    "edquot": (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), os.strerror(errno.EDQUOT)),
    "erofs": (OSError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system"),
    "eacces": (PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "Permission denied"),
    "eio": (OSError(errno.EIO, os.strerror(errno.EIO)), "Input/output error"),
}


def assert_one_line_naming(err: BaseException, path: Path, reason: str) -> None:
    code, message = describe_error(err)
    assert code == 1 and message == f"error: cannot write {path}: {reason}", message
    assert "\n" not in message


@pytest.mark.parametrize("kind", WRITE_FAILURES)
def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch, kind):
    from softclip import checkpoint as ckpt

    raised, reason = WRITE_FAILURES[kind]

    def save(*args, **kwargs):
        raise raised

    monkeypatch.setattr(ckpt.torch, "save", save)
    path = ckpt.checkpoint_path(tmp_path, 10)
    with pytest.raises(OSError) as err:
        ckpt.save_checkpoint({"step": 10}, path)
    assert_one_line_naming(err.value, path, reason)
    assert list(tmp_path.iterdir()) == []  # no temporary, no record


@pytest.mark.parametrize("kind", WRITE_FAILURES)
def test_an_evaluation_cache_result_or_report_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, kind):
    import numpy as np

    raised, reason = WRITE_FAILURES[kind]

    def save(*args, **kwargs):
        raise raised

    monkeypatch.setattr(np, "save", save)  # the evaluation cache writes embeddings with np.save
    cache = tmp_path / "images.npy"
    with pytest.raises(OSError) as err:
        atomic.atomic_write(cache, lambda f: np.save(f, np.zeros(3)))
    assert_one_line_naming(err.value, cache, reason)

    def fsync(fd):  # the result JSON, a report's table: the failure comes at the flush to disk
        raise raised

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    for path in (tmp_path / "zeroshot.json", tmp_path / "table.md"):
        with pytest.raises(OSError) as err:
            atomic.write_text(path, "x")
        assert_one_line_naming(err.value, path, reason)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", WRITE_FAILURES)
def test_metrics_jsonl_that_cannot_be_appended_is_one_line(tmp_path, kind):
    from softclip.train.metrics import MetricsWriter

    raised, reason = WRITE_FAILURES[kind]

    class Full:
        def write(self, text):
            raise raised

        flush = close = write

    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    writer._file.close()
    writer._file = Full()  # the open file's writes fail (disk full after it was opened)
    with pytest.raises(OSError) as err:
        writer.write({"kind": "train", "step": 1})
    assert_one_line_naming(err.value, tmp_path / "metrics.jsonl", reason)


def test_a_missing_folder_names_the_file(tmp_path):
    path = tmp_path / "gone" / "report.md"
    with pytest.raises(OSError) as err:
        atomic.write_text(path, "x")
    assert_one_line_naming(err.value, path, "No such file or directory")


def test_a_full_disk_is_named_even_when_the_library_does_not_say_so(tmp_path, monkeypatch):
    from collections import namedtuple

    from softclip import errors

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda p: usage(100, 100, 0))
    with pytest.raises(OSError) as err:
        atomic.atomic_write(tmp_path / "x.pt", lambda f: (_ for _ in ()).throw(RuntimeError("unexpected pos 64")))
    assert_one_line_naming(err.value, tmp_path / "x.pt", "No space left on device (unexpected pos 64)")


def test_a_bug_inside_a_write_is_not_disguised_as_a_write_failure(tmp_path):
    with pytest.raises(RuntimeError, match="device-side assert") as err:
        atomic.atomic_write(tmp_path / "x.pt", lambda f: (_ for _ in ()).throw(RuntimeError("device-side assert")))
    assert describe_error(err.value) is None  # a traceback: it is not the user's disk
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (the injected cases cover it)")
def test_a_real_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError) as err:
            atomic.write_text(folder / "a.json", "{}")
        assert_one_line_naming(err.value, folder / "a.json", "Permission denied")
    finally:
        folder.chmod(0o700)


def test_training_onto_a_full_disk_is_one_line_and_releases_the_lock(tmp_path, monkeypatch, capsys):
    from softclip import checkpoint as ckpt

    def save(*args, **kwargs):
        raise TORCH_FULL

    monkeypatch.setattr(ckpt.torch, "save", save)
    run = tmp_path / "run"
    argv = ["train", str(ROOT / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir", str(run), "--no-eval",
            "train.steps=2", "train.ckpt_every=1", "train.log_every=1"]  # fmt: skip
    assert main(argv) == 1
    path = run / "checkpoints" / "step_00000001.pt"
    assert one_line(capsys) == f"softclip: error: cannot write {path}: {WRITE_FAILURES['torch_save_disk_full'][1]}"
    assert not (run / "lock.json").exists() and sorted(p.name for p in (run / "checkpoints").iterdir()) == []


@pytest.mark.parametrize(
    "text,reason",
    [
        ("{oops", "is damaged (JSONDecodeError"),
        ("[1, 2]", "is damaged: a JSON object was expected, found list"),
        ('{"variant": "v"}', "is damaged: ablation missing"),
        ('{"ablation": "a", "variant": "v", "seed": "zero"}', "is damaged: seed='zero' has the wrong type (int expected)"),
        ('{"ablation": "a", "variant": "v", "factors": [1]}', "is damaged: factors=[1] has the wrong type (dict expected)"),
    ],
)  # fmt: skip
def test_a_damaged_ablation_json_is_one_line_naming_it_not_a_phantom_ablation(tmp_path, capsys, text, reason):
    from tests.unit.report.fakes import make_run

    run = make_run(tmp_path / "runs" / "abl" / "v1" / "s0", seed=0, results={"zeroshot": {"top1": 1.0}})
    (run / "ablation.json").write_text(text)
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 1
    assert one_line(capsys).startswith(f"softclip: error: {run / 'ablation.json'} {reason}")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    "message,reason",
    [
        ("database or disk is full", "database or disk is full"),
        ("attempt to write a readonly database", "attempt to write a readonly database"),
    ],
)
def test_a_sweep_storage_that_cannot_be_written_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys,
                                                                             message, reason):  # fmt: skip
    """SQLite says it through SQLAlchemy, which Optuna wraps in StorageInternalError (no errno, no path)."""
    import sqlite3

    import optuna
    import sqlalchemy.exc

    import softclip.sweep

    def full(*args, **kwargs):
        try:
            try:
                raise sqlite3.OperationalError(message)
            except sqlite3.OperationalError as err:
                raise sqlalchemy.exc.OperationalError("INSERT INTO trials ...", {}, err) from err
        except sqlalchemy.exc.OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err

    monkeypatch.setattr(softclip.sweep, "run_sweep", full)
    assert main(["sweep", str(sweep_file(tmp_path)), "--launcher", "inprocess"]) == 1
    db = (tmp_path / "runs" / "s" / "study.db").resolve()
    assert one_line(capsys) == f"softclip: error: cannot write {db}: {reason}"


def test_the_os_error_torch_save_swallows_is_the_one_reported(tmp_path, monkeypatch):
    """On a real full disk torch's zip writer raises RuntimeError("unexpected pos 240832 vs 240720"), the
    ENOSPC of the file's write lost; the checkpoint writer keeps it (found on a 400 KB tmpfs)."""
    import torch

    from softclip import checkpoint as ckpt

    class Quota:  # a file system with 1000 bytes left
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += len(memoryview(data).cast("B"))
            if self.n > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    init = ckpt._HashingWriter.__init__
    monkeypatch.setattr(ckpt._HashingWriter, "__init__", lambda self, f: init(self, Quota(f)))
    path = tmp_path / "step_00000001.pt"
    with pytest.raises(OSError) as err:
        ckpt.save_checkpoint({"step": 1, "w": torch.zeros(10_000)}, path)
    assert_one_line_naming(err.value, path, "No space left on device")
    assert list(tmp_path.iterdir()) == []
