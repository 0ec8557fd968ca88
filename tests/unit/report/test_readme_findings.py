"""The README carries no hand-written finding: every quoted line is a sentence of a committed, generated
``reports/*/findings.md``, and no interval appears anywhere else in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
INTERVAL = re.compile(r"[+−-]?\d+(\.\d+)? \[[+−-]?\d+(\.\d+)?, [+−-]?\d+(\.\d+)?\]")


def findings_lines() -> set[str]:
    lines: set[str] = set()
    for path in ROOT.glob("reports/*/findings.md"):
        lines |= {line.strip().removeprefix("- ").strip() for line in path.read_text(encoding="utf-8").splitlines()}
    return lines


def test_every_quote_in_the_readme_is_a_line_of_a_committed_findings_md() -> None:
    known = findings_lines()
    quotes = [line.strip()[2:].strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
              if line.strip().startswith("> ")]  # fmt: skip
    assert quotes, "the README's findings section quotes findings.md"
    assert [q for q in quotes if q not in known] == []


def test_no_interval_outside_a_quote() -> None:
    typed = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
             if INTERVAL.search(line) and not line.strip().startswith("> ")]  # fmt: skip
    assert typed == []
