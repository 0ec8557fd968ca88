"""optuna-dashboard reads softclip's study storages: a 2-trial no-op sweep in SQLite and in a journal file, the
real ``optuna-dashboard`` server as a subprocess, its HTTP API asked for the study and its trials (and a trial
added while it runs). PostgreSQL needs a server, so it is not covered here; the dashboard needs its URL with
the driver named (``postgresql+psycopg2://``) unless psycopg 3 is installed."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from softclip.sweep import load_sweep, run_sweep
from softclip.sweep.study import JOURNAL_PREFIX, dashboard_command

ROOT = Path(__file__).resolve().parents[2]
NAME = "dash"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def dashboard_exe() -> str:
    """The ``optuna-dashboard`` script next to this interpreter (else on PATH); fails without it."""
    local = Path(sys.executable).with_name("optuna-dashboard")
    found = str(local) if local.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        message = "optuna-dashboard is not installed (pip install -e '.[dev]')"
        pytest.fail(message)  # a dev dependency: its absence is a broken install, not a reason to skip
    return found


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> Any:  # fmt: skip
    """Poll ``check`` until it returns a truthy value; fail after ``timeout`` s or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            result = check()
            if result:
                return result
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"optuna-dashboard exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.1)


@contextlib.contextmanager
def dashboard(args: list[str], log: Path, attempts: int = 5) -> Iterator[str]:
    """Run ``optuna-dashboard ARGS`` on a free localhost port; yields its base URL once the API answers.

    A port found free can be taken by another process before the server binds it; a server that exits with
    "address already in use" is restarted on a new port (any other early exit fails the test).
    """
    for attempt in range(attempts):
        port = free_port()
        cmd = [dashboard_exe(), "--host", "127.0.0.1", "--port", str(port), *args]
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        base = f"http://127.0.0.1:{port}"
        try:
            def answer(base=base, proc=proc):
                return get_json(f"{base}/api/studies") if proc.poll() is None else "exited"

            answered = wait_for(answer, 60, "answer from /api/studies", None, log)
            if answered == "exited":
                if "in use" in log.read_text().lower() and attempt + 1 < attempts:
                    continue
                pytest.fail(f"optuna-dashboard exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            yield base
            return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def write_spec(tmp_path: Path, storage: str | None):
    data = {
        "name": NAME, "base": str(ROOT / "ablations" / "base.yaml"), "trial": "noop",
        "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9}},
        "objective": {"metric": "noop/value", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0}, "n_trials": 2, "output_dir": str(tmp_path / "runs"),
        **({"storage": storage} if storage else {}),
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep(path, "smoke")


def study_detail(base: str) -> dict[str, Any]:
    summaries = get_json(f"{base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [NAME]
    assert summaries[0]["directions"] == ["maximize"]
    return get_json(f"{base}/api/studies/{summaries[0]['study_id']}")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_dashboard_shows_a_softclip_sweep(tmp_path, kind):
    storage = f"{JOURNAL_PREFIX}{tmp_path / 'journal' / 'study.log'}" if kind == "journal" else None
    spec = write_spec(tmp_path, storage)
    result = run_sweep(spec, launcher="inprocess")
    assert result.counts == {"COMPLETE": 2}
    assert result.storage_url.startswith("sqlite:///" if kind == "sqlite" else JOURNAL_PREFIX)

    with dashboard(dashboard_command(result.storage_url)[1:], tmp_path / "dashboard.log") as base:
        detail = study_detail(base)
        assert detail["name"] == NAME
        assert detail["objective_names"] == ["noop/value"]
        assert [(t["number"], t["state"]) for t in detail["trials"]] == [(0, "Complete"), (1, "Complete")]
        assert {p["name"] for t in detail["trials"] for p in t["params"]} == {"loss.beta"}
        assert detail["best_trials"][0]["values"] == [result.best[0]["values"][0]]

        run_sweep(spec, launcher="inprocess", n_trials=3)  # the sweep goes on while watched
        wait_for(lambda: len(study_detail(base)["trials"]) == 3, 15, "third trial in the dashboard")
