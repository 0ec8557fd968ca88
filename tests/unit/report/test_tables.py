"""Table model and writers: bold best by direction, Δ text, balanced LaTeX, parseable HTML, numeric CSV."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from softclip.report import collect, summarize
from softclip.report.tables import HEADLINE, WRITERS, Style, build_tables, cell_delta, fmt_num, latex_escape

from .fakes import make_grid, make_run

VOID = {"br", "meta", "img", "hr", "link", "input"}


class TagBalance(HTMLParser):
    """Checks that every opened tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def assert_balanced_html(text: str) -> TagBalance:
    parser = TagBalance()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    return parser


def assert_balanced_latex(text: str, ncols: int) -> None:
    assert text.count(r"\begin{tabular}") == 1 and text.count(r"\end{tabular}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", text)
    assert spec and len(spec.group(1)) == ncols
    rows = [line for line in text.splitlines() if line.rstrip().endswith(r"\\")]
    assert rows and all(len(re.findall(r"(?<!\\)&", row)) == ncols - 1 for row in rows)
    body = text[text.index(r"\begin{tabular}"):]
    assert not re.search(r"(?<!\\)[_#%]", body.replace(r"\%", ""))  # specials escaped inside the tabular


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tables")
    make_grid(root, n_ablations=1, n_variants=3, seeds=(0, 1, 2), curves=False)
    # a label with LaTeX/Markdown/HTML specials
    make_run(root / "abl0" / "v_odd" / "s0", seed=0, results={"zeroshot": {"top1": 1.0}},
             meta={"ablation": "abl0", "variant": "v_odd", "label": "a_b 50% & #1 <x> | y", "order": 9})  # fmt: skip
    summary = summarize(collect([root]), n_boot=500)
    return build_tables(summary)


def test_table_rows_columns_and_best(tables) -> None:
    table = tables["abl0"]
    assert [r.variant for r in table.rows] == ["v0", "v1", "v2", "v_odd"]
    assert table.columns == [k for k in HEADLINE if k in set(table.stats["key"])]
    assert table.baseline == "v0" and table.rows[0].is_baseline and table.rows[0].n == 3
    assert table.rows[3].n == 1 and table.rows[3].cells[table.columns.index("retrieval/rsum")] is None
    col = table.columns.index("zeroshot/top1")
    assert [r.cells[col]["best"] for r in table.rows] == [False, False, True, False]  # v2 has the highest values


def test_lower_is_better_column_marks_the_minimum(tables) -> None:
    stats = tables["abl0"].stats
    loss = stats[stats["key"] == "retrieval/val_nce_loss"].set_index("variant")
    assert loss["best"].to_dict() == {"v0": True, "v1": False, "v2": False}
    assert loss.loc["v2", "delta"] > 0 and not loss.loc["v2", "higher_is_better"]


def test_markdown(tables) -> None:
    text = WRITERS.get("md").render(tables["abl0"])
    lines = text.splitlines()
    assert lines[0].startswith("| variant | n | zero-shot top-1 |") and lines[1].startswith("|:--|--:|")
    assert len({line.count(" | ") for line in lines[2:]}) == 1
    v0, v2 = lines[2], lines[4]
    assert "(baseline)" in v0 and "**" not in v0.split(" | ")[2]
    assert v2.split(" | ")[2].startswith("**") and re.search(r"\(\+14.0 \[1\d.\d, 1\d.\d\], p[=<]", v2)
    assert r"a_b 50% & #1 <x> \| y" in text


def test_latex_balanced_and_escaped(tables) -> None:
    table = tables["abl0"]
    text = WRITERS.get("latex").render(table)
    assert_balanced_latex(text, ncols=2 + len(table.columns))
    assert r"a\_b 50\% \& \#1 \textless{}x\textgreater{} | y" in text
    assert r"\textbf{" in text and r"$\pm$" in text and r"\toprule" in text and r"\bottomrule" in text


def test_html_parses_and_marks_best(tables) -> None:
    text = WRITERS.get("html").render(tables["abl0"])
    parser = assert_balanced_html(text)
    assert parser.tags.count("tr") == 1 + 4 and "strong" in parser.tags
    assert "a_b 50% &amp; #1 &lt;x&gt; | y" in text


def test_csv_is_the_numeric_summary(tables) -> None:
    frame = pd.read_csv(io.StringIO(WRITERS.get("csv").render(tables["abl0"])))
    assert {"variant", "key", "mean", "std", "delta", "ci_low", "ci_high", "p_ttest", "pairing", "best"} <= set(frame)
    assert frame["best"].dtype == bool and len(frame) == len(tables["abl0"].stats)
    assert set(frame.loc[frame["variant"] == "v1", "pairing"]) == {"paired"}
    odd = frame[frame["variant"] == "v_odd"]  # seed 0 only: paired on it, one pair, no interval
    assert set(odd["pairing"]) == {"paired"} and set(odd["n_pairs"]) == {1} and set(odd["n_unmatched"]) == {2}
    assert set(odd["finding"]) == {"n too small"} and odd["ci_low"].isna().all() and odd["p_ttest"].isna().all()


def test_writers_registry() -> None:
    assert WRITERS.names() == ["csv", "html", "latex", "md"]
    assert {n: WRITERS.get(n).ext for n in WRITERS.names()} == {"csv": "csv", "html": "html", "latex": "tex",
                                                                 "md": "md"}  # fmt: skip


def test_number_formats() -> None:
    style = Style()
    assert fmt_num(-0.25, style) == "−0.25" and fmt_num(12.345, style) == "12.3" and fmt_num(1.0, style, True) == "+1.00"
    assert fmt_num(-0.001, style) == "0.00" and fmt_num(float("nan"), style) == ""
    cell = {"delta": 1.2, "ci_low": -0.3, "ci_high": 2.8, "pairing": "paired", "p_ttest": 0.0412, "p_welch": float("nan"),
            "decimals": 1}  # fmt: skip
    assert cell_delta(cell, style) == "+1.2 [−0.3, 2.8], p=0.041"
    assert cell_delta({**cell, "pairing": "unpaired", "p_ttest": float("nan"), "p_welch": 0.0001}, style) == (
        "+1.2 [−0.3, 2.8]†, p(Welch)<0.001")
    assert latex_escape("a_b%c&d#e$f{g}") == r"a\_b\%c\&d\#e\$f\{g\}"


def test_unknown_format_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="latex"):
        WRITERS.get("latx")
