"""Fixtures of the ``slurm`` tier: the single-node cluster from .ci/slurm/up.sh and PostgreSQL from
.ci/postgres/up.sh. Without them the tests skip locally and FAIL under CI (env CI set)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _missing(what: str, how: str) -> None:
    message = f"{what} is not up; start it with `{how}`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _slurm_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in ping.stdout and any(s.startswith(("idle", "mix", "alloc")) for s in nodes.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    if not _slurm_up():
        _missing("the SLURM test cluster", "bash .ci/slurm/up.sh")


@pytest.fixture()
def cluster_file(slurm_cluster, tmp_path: Path) -> Path:
    """clusters/local.yaml with a fresh submitit folder (job ids restart at 1 on a fresh cluster)."""
    data = yaml.safe_load((ROOT / "clusters" / "local.yaml").read_text())
    data["folder"] = str(tmp_path / "submitit")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url_file = ROOT / ".ci" / "postgres" / "url"
    if not url_file.is_file():
        _missing("the PostgreSQL test server", "bash .ci/postgres/up.sh")
    url = url_file.read_text().strip()
    try:
        import sqlalchemy

        from softclip.sweep.study import _sqlalchemy_url

        with sqlalchemy.create_engine(_sqlalchemy_url(url)).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as err:  # noqa: BLE001
        _missing(f"the PostgreSQL test server ({url}: {err})", "bash .ci/postgres/up.sh")
    return url
