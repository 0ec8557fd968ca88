"""Per-ablation tables: rows = variants (in ablation order), columns = metrics, cells ``mean ± std`` and
``Δ [95% interval], p`` against the baseline; the best variant per column marked. Writers: md, latex, html, csv.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from softclip.registry import Registry
from softclip.report.document import Grid, html_grid, html_page, md_escape, md_grid

HEADLINE = (
    "zeroshot/top1", "zeroshot/shape_acc", "retrieval/i2t_r1", "retrieval/t2i_r1", "retrieval/rsum",
    "retrieval/t2i_sem_map", "instance/map_medium", "instance/map_hard", "copydays/map_strong",
)  # fmt: skip
HEADERS = {
    "zeroshot/top1": "zero-shot top-1", "zeroshot/shape_acc": "shape acc", "retrieval/i2t_r1": "i2t R@1",
    "retrieval/t2i_r1": "t2i R@1", "retrieval/rsum": "RSUM", "retrieval/t2i_sem_map": "t2i sem. mAP",
    "instance/map_medium": "inst. mAP medium", "instance/map_hard": "inst. mAP hard",
    "copydays/map_strong": "Copydays mAP strong",
}  # fmt: skip


@dataclass(frozen=True)
class Style:
    """How one output format writes the symbols of a cell."""

    pm: str = " ± "
    minus: str = "−"
    lt: str = "<"
    dagger: str = "†"


@dataclass(frozen=True)
class Row:
    """One variant: its stats per column (None where the metric is missing)."""

    variant: str
    label: str
    n: int
    is_baseline: bool
    cells: list[dict | None]


@dataclass(frozen=True)
class Table:
    """One ablation's table; ``stats`` is its long numeric summary (every metric), written as CSV."""

    ablation: str
    baseline: str | None
    columns: list[str]
    rows: list[Row]
    stats: pd.DataFrame

    @property
    def headers(self) -> list[str]:
        return [HEADERS.get(c, c) for c in self.columns]

    @property
    def caption(self) -> str:
        head = f"{self.ablation}: mean ± std over seeds (n); best per column in bold"
        if not self.baseline:
            return head + "; no baseline, so no Δ."
        return (f"{head}; Δ vs {self.baseline} with its 95% bootstrap interval over seeds (paired by seed; "
                "† unpaired) and p (paired t-test; Welch's where unpaired).")  # fmt: skip


def choose_metrics(summary: pd.DataFrame, requested: Sequence[str] | None = None) -> list[str]:
    """The requested metric keys (default :data:`HEADLINE`) that the summary has, in the requested order."""
    present = set(summary["key"])
    return [k for k in (requested or HEADLINE) if k in present]


def ablation_table(summary: pd.DataFrame, ablation: str, columns: Sequence[str]) -> Table:
    """Build the table of ``ablation`` from a :func:`~softclip.report.stats.summarize` frame."""
    part = summary[summary["ablation"] == ablation]
    baseline = next((b for b in part["baseline"] if b), None)
    by_key = {(r["variant"], r["key"]): r for r in part.to_dict("records")}
    variants = part.drop_duplicates("variant")
    decimals = {key: column_decimals(part.loc[part["key"] == key, "mean"]) for key in columns}
    rows = []
    for rec in variants.to_dict("records"):
        seeds = set().union(*(s.split(",") for s in part.loc[part["variant"] == rec["variant"], "seeds"] if s))
        found = [(key, by_key.get((rec["variant"], key))) for key in columns]
        cells = [None if cell is None else {**cell, "decimals": decimals[key]} for key, cell in found]
        rows.append(Row(rec["variant"], rec["label"], len(seeds), rec["variant"] == baseline, cells))
    return Table(ablation, baseline, list(columns), rows, part.reset_index(drop=True))


def build_tables(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> dict[str, Table]:
    """{ablation: table} for every ablation in ``summary`` (sorted by name)."""
    return {a: ablation_table(summary, a, choose_metrics(summary[summary["ablation"] == a], metrics))
            for a in sorted(summary["ablation"].unique())}  # fmt: skip


# ------------------------------------------------------------------------------------------- cell text


def column_decimals(means: pd.Series) -> int:
    """Decimals for a column: 2 when every |mean| is below 10 (losses, ranks, small scores), else 1."""
    finite = means[means.notna()].abs()
    return 2 if finite.empty or finite.max() < 10 else 1


def fmt_num(x: float, style: Style, signed: bool = False, decimals: int | None = None) -> str:
    """``decimals`` places (default: 2 below 10, else 1); ``style.minus`` for negatives; ``+`` when ``signed``."""
    if x is None or not math.isfinite(x):
        return ""
    places = decimals if decimals is not None else (2 if abs(x) < 10 else 1)
    text = f"{abs(x):.{places}f}"
    sign = style.minus if x < 0 and float(text) != 0 else ("+" if signed else "")
    return sign + text


def fmt_p(p: float, style: Style) -> str:
    return f"{style.lt}0.001" if p < 0.001 else f"={p:.2g}"


def cell_main(cell: dict, style: Style) -> str:
    """``mean ± std`` (just the mean for one seed)."""
    places = cell.get("decimals")
    std = fmt_num(cell["std"], style, decimals=places)
    return fmt_num(cell["mean"], style, decimals=places) + (style.pm + std if std else "")


def cell_delta(cell: dict, style: Style) -> str:
    """``+1.2 [−0.3, 2.8], p=0.04`` or empty for the baseline / a missing baseline."""
    if not math.isfinite(cell.get("delta", math.nan)):
        return ""
    places = cell.get("decimals")
    text = fmt_num(cell["delta"], style, signed=True, decimals=places)
    if math.isfinite(cell["ci_low"]):
        mark = style.dagger if cell["pairing"] == "unpaired" else ""
        lo, hi = (fmt_num(cell[k], style, decimals=places) for k in ("ci_low", "ci_high"))
        text += f" [{lo}, {hi}]{mark}"
    if math.isfinite(cell["p_ttest"]):
        text += ", p" + fmt_p(cell["p_ttest"], style)
    elif math.isfinite(cell["p_welch"]):
        text += ", p(Welch)" + fmt_p(cell["p_welch"], style)
    return text


def row_name(row: Row) -> str:
    return row.label + (" (baseline)" if row.is_baseline else "")


# ----------------------------------------------------------------------------------------------- writers


@dataclass(frozen=True)
class Writer:
    """A table output format: its file extension and its renderer."""

    ext: str
    render: Callable[[Table], str]


WRITERS: Registry[Writer] = Registry("report.table_format")


def writer(name: str, ext: str) -> Callable[[Callable[[Table], str]], Callable[[Table], str]]:
    """Register a renderer as the table format ``name`` written to ``<ablation>.<ext>``."""

    def deco(fn: Callable[[Table], str]) -> Callable[[Table], str]:
        WRITERS.register(name)(Writer(ext, fn))
        return fn

    return deco


def md_table_grid(table: Table) -> Grid:
    """The table as a Markdown grid (best cells bold)."""
    style = Style()
    rows = []
    for row in table.rows:
        cells = [md_escape(row_name(row)), str(row.n)]
        for cell in row.cells:
            if cell is None:
                cells.append("")
                continue
            main = cell_main(cell, style)
            delta = cell_delta(cell, style)
            cells.append((f"**{main}**" if cell["best"] else main) + (f" ({delta})" if delta else ""))
        rows.append(cells)
    return Grid(["variant", "n", *(md_escape(h) for h in table.headers)], rows, "lr" + "r" * len(table.columns))


def html_table_grid(table: Table) -> Grid:
    """The table as an HTML grid (best cells in ``<strong>``, Δ on a second line)."""
    style = Style()
    rows = []
    for row in table.rows:
        cells = [html.escape(row_name(row)), str(row.n)]
        for cell in row.cells:
            if cell is None:
                cells.append("")
                continue
            main = html.escape(cell_main(cell, style))
            delta = html.escape(cell_delta(cell, style))
            cells.append((f"<strong>{main}</strong>" if cell["best"] else main)
                         + (f"<br><small>{delta}</small>" if delta else ""))  # fmt: skip
        rows.append(cells)
    return Grid(["variant", "n", *table.headers], rows, "lr" + "r" * len(table.columns))


@writer("md", "md")
def _md(table: Table) -> str:
    return md_grid(md_table_grid(table))


@writer("html", "html")
def _html(table: Table) -> str:
    return html_page(f"{table.ablation} table", html_grid(html_table_grid(table), table.caption))


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "<": r"\textless{}", ">": r"\textgreater{}"}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


@writer("latex", "tex")
def _latex(table: Table) -> str:
    """booktabs tabular; each variant gets a second, small row with Δ [interval], p."""
    style = Style(pm=r" $\pm$ ", minus="$-$", lt="$<$", dagger=r"$^\dagger$")
    ncols = 2 + len(table.columns)
    lines = ["% " + latex_escape(table.caption), r"% requires \usepackage{booktabs}",
             r"\begin{tabular}{l" + "r" * (ncols - 1) + "}", r"\toprule",
             " & ".join(["variant", "$n$", *(latex_escape(h) for h in table.headers)]) + r" \\", r"\midrule"]  # fmt: skip
    for row in table.rows:
        mains, deltas = [], []
        for cell in row.cells:
            main = cell_main(cell, style) if cell else ""
            mains.append(r"\textbf{" + main + "}" if cell and cell["best"] else main)
            delta = cell_delta(cell, style) if cell else ""
            deltas.append(r"{\scriptsize " + delta + "}" if delta else "")
        lines.append(" & ".join([latex_escape(row_name(row)), str(row.n), *mains]) + r" \\")
        if any(deltas):
            lines.append(" & ".join(["", "", *deltas]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


@writer("csv", "csv")
def _csv(table: Table) -> str:
    """The long numeric summary of the ablation (every metric), ``best`` as a boolean column."""
    return table.stats.to_csv(index=False, lineterminator="\n")

