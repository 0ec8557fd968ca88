"""`softclip reproduce --profile smoke` end to end: every ablation, the β×τ sweep, every table and figure."""

from __future__ import annotations

import html.parser
import json
from pathlib import Path

import pytest

from softclip.cli import main
from softclip.reproduce import ABLATIONS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


class _Tags(html.parser.HTMLParser):
    VOID = {"br", "img", "hr", "meta", "link", "col", "input", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def test_reproduce_smoke_writes_every_table_and_figure(tmp_path, monkeypatch, capsys):
    for name in ("eval", "clusters"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)  # runs/, data/ and reports/ land here
    assert main(["reproduce", "--profile", "smoke", "--workers", "2"]) == 0
    out = tmp_path / "reports" / "smoke"
    for name in ABLATIONS:
        for ext in ("md", "tex", "html", "csv"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    figures = {p.name for p in (out / "figures").glob("*.png") if p.stat().st_size > 1000}
    for expected in ("heatmap", "noise", "bars_aggregation", "train_loss", "recall"):
        assert any(expected in f for f in figures), (expected, sorted(figures))
    parser = _Tags()
    parser.feed((out / "report.html").read_text())
    assert not parser.stack
    report = (out / "report.md").read_text()
    assert all(f"Ablation: {name}" in report for name in ABLATIONS)
    manifests = {name: json.loads((tmp_path / f"runs/ablations/smoke/{name}/manifest.json").read_text())
                 for name in ("main", "targets")}  # fmt: skip
    runs = {name: {(r["variant"], r["seed"]): r["run_dir"] for r in m["runs"]} for name, m in manifests.items()}
    assert runs["targets"][("hard", 0)] == runs["main"][("clip", 0)]  # one run folder, in both manifests
    assert not list((tmp_path / "runs").rglob("ablation.json"))
    assert "declared in the manifest of its runs" in (out / "findings.md").read_text()
    capsys.readouterr()
    assert main(["reproduce", "--profile", "smoke", "--only", "main,beta_tau"]) == 0  # a re-run trains nothing
    assert "0 trained now" in capsys.readouterr().out
