"""``softclip reproduce --profile rehearsal`` end to end, as from a fresh clone: the paper-shaped data is written
on first use, the main table's paper runs (CLIP and SoftCLIP, RN50 and ViT-B-32 at 224 px, SoftCLIP with MHSA
over K <= 50 VinVL-shaped regions of 2,054 dims) train 3 steps each through the local processes launcher, each
scores the whole paper suite (ImageNet's 1,000 classes x 80 templates included), and the report says it is a
rehearsal. Its own tier (``make test-rehearsal``, .ci/run): about an hour of CPU (reports/perf/eval_scale.md)."""

from __future__ import annotations

import pytest

from softclip import cli
from tests.integration.rehearsal_checks import check_rehearsal, in_fresh_checkout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(7200)]


def test_reproduce_rehearsal_from_a_fresh_checkout(tmp_path, monkeypatch):
    in_fresh_checkout(tmp_path, monkeypatch)
    argv = ["reproduce", "--profile", "rehearsal", "--launcher", "processes", "--out", str(tmp_path / "report")]
    assert cli.main(argv) == 0
    assert (tmp_path / "data" / "rehearsal" / "card.json").is_file()  # written on first use
    check_rehearsal(tmp_path, world_size=1)
