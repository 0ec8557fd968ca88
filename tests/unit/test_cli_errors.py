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
    assert code == 1 and message == f"error: No space left on device: {target}"


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
    assert one_line(capsys) == f"softclip: error: Read-only file system: {run}"
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
