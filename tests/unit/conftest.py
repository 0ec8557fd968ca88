"""Fixtures shared by the unit tests of several packages."""

from __future__ import annotations

import pytest

from tests.unit.launch import fakes


@pytest.fixture()
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ablation jobs write a finished run folder instead of training, and no data is generated."""
    import softclip.ablate

    monkeypatch.setattr(softclip.ablate, "run_ablation_job", fakes.ablation_job)
    monkeypatch.setattr(softclip.ablate, "prepare_data", lambda jobs: [])
