"""tools/venv.sh (what `make venv` calls): when ensurepip fails it still builds a venv with pip, offline, and
says which step failed; a Python without the venv module is a one-line error and exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "venv.sh"


def fake_python(tmp_path: Path, body: str) -> Path:
    """A stand-in interpreter: a bash wrapper around this test's Python, with ``body`` run first."""
    path = tmp_path / "python3"
    path.write_text(f'#!/usr/bin/env bash\n{body}\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


def run_script(python: Path, venv: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.run(["bash", str(SCRIPT), str(python), str(venv)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_failing_ensurepip_falls_back_to_the_bundled_pip_wheel(tmp_path):
    # `-m venv` with pip (the ensurepip path) fails, as on the CI machine; `--without-pip` works.
    python = fake_python(tmp_path, '[ "$1 $2" = "-m venv" ] && [ "$3" != "--without-pip" ] && '
                                   '{ echo "ensurepip returned non-zero exit status 1" >&2; exit 1; }')
    venv = tmp_path / "work" / ".venv"
    venv.parent.mkdir()
    done = run_script(python, venv)
    assert done.returncode == 0, done.stderr
    assert "step 1 failed" in done.stderr and "step 2 failed" in done.stderr
    assert "with pip from pip-" in done.stderr
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True, text=True)
    assert pip.returncode == 0 and str(venv) in pip.stdout
    assert not (venv.parent / ".venv-tmp").exists()


def test_a_python_without_venv_is_one_line_and_exit_1(tmp_path):
    python = fake_python(tmp_path, '[ "$1" = "-c" ] && [ "$2" = "import venv" ] && exit 1')
    done = run_script(python, tmp_path / ".venv")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no venv module" in lines[0]
    assert not (tmp_path / ".venv").exists()
