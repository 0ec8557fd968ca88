"""optuna-dashboard on the PostgreSQL storage (the server .ci/postgres/up.sh starts): the dashboard needs the
driver named in the URL (``postgresql+psycopg2://``), which ``dashboard_command`` writes (password redacted)."""

from __future__ import annotations

import uuid

import pytest
import yaml

from softclip.sweep import load_sweep, run_sweep
from softclip.sweep.study import _sqlalchemy_url, dashboard_command
from tests.integration.test_dashboard import ROOT, dashboard, get_json, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]


def test_dashboard_shows_a_sweep_stored_in_postgresql(tmp_path, postgres_url):
    name = f"dash-{uuid.uuid4().hex[:8]}"
    data = {
        "name": name, "base": str(ROOT / "ablations" / "base.yaml"), "trial": "noop", "storage": postgres_url,
        "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9}},
        "objective": {"metric": "noop/value", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0}, "n_trials": 2, "output_dir": str(tmp_path / "runs"),
    }  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    result = run_sweep(load_sweep(tmp_path / "sweep.yaml", "smoke"), launcher="inprocess")
    assert result.counts == {"COMPLETE": 2}
    shown = dashboard_command(postgres_url)[1]
    assert shown.startswith("postgresql+psycopg2://")  # CI's venv has psycopg2 only
    password = postgres_url.split("//", 1)[1].split("@")[0].partition(":")[2]
    assert not password or (f":{password}@" not in shown and ":***@" in shown)
    with dashboard([_sqlalchemy_url(postgres_url)], tmp_path / "dashboard.log") as base:

        def ours() -> dict | None:
            summaries = get_json(f"{base}/api/studies")["study_summaries"]
            return next((s for s in summaries if s["study_name"] == name), None)

        summary = wait_for(ours, 30, f"study {name} in the dashboard")
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete"]
