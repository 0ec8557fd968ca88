"""Per-ablation tables: rows = variants (in ablation order), columns = metrics, cells ``mean ± std`` and
``Δ [95% interval], p, adjusted p; sd Δ, MDE`` against the row's baseline; the best variant per column marked
only where it is distinguishable from the runner-up; :func:`findings` says the same in words (better/worse
only from the adjusted p). Composite columns (RSUM) carry the oracle control's verdict on them. Writers: md,
latex, html, csv. When the rows of a table have different baselines (``compare_within``), every format gets a ``vs`` column
(the baseline's label) and the caption says so; with one shared baseline the output has no such column.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from softclip.registry import Registry
from softclip.report.document import Grid, html_grid, html_page, md_escape, md_grid
from softclip.report.multiplicity import PRIMARY
from softclip.report.stats import BETTER, EQUIVALENT, INCONCLUSIVE, N_TOO_SMALL, NOT_COUNTED, WORSE

# zero-shot shape accuracy is not a column: it coincides with top-1 here (softclip/metrics.yaml, alias_of)
HEADLINE = (
    "zeroshot/top1", "retrieval/i2t_sem_map", "retrieval/t2i_sem_map", "retrieval/i2t_r1", "retrieval/t2i_r1",
    "retrieval/rsum", "instance/map_medium", "instance/map_hard", "copydays/map_strong",
)  # fmt: skip
HEADERS = {
    "zeroshot/top1": "zero-shot top-1", "zeroshot/shape_acc": "shape acc", "retrieval/i2t_r1": "i2t R@1",
    "retrieval/t2i_r1": "t2i R@1", "retrieval/rsum": "RSUM", "retrieval/t2i_sem_map": "t2i sem. mAP",
    "retrieval/i2t_sem_map": "i2t sem. mAP", "instance/map_medium": "inst. mAP medium",
    "instance/map_hard": "inst. mAP hard", "copydays/map_strong": "Copydays mAP strong",
}  # fmt: skip
COMPOSITES = ("retrieval/rsum",)  # sums of other metrics: their header says whether the oracle control moves them


@dataclass(frozen=True)
class Style:
    """How one output format writes the symbols of a cell."""

    pm: str = " ± "
    minus: str = "−"
    lt: str = "<"
    dagger: str = "†"


@dataclass(frozen=True)
class Row:
    """One variant: its stats per column (None where the metric is missing), its baseline variant and, unless it
    is its own baseline, that baseline's label (``vs``)."""

    variant: str
    label: str
    n: int
    is_baseline: bool
    cells: list[dict | None]
    baseline: str | None = None
    vs: str = ""
    failed: str = ""  # e.g. "1 failed (s3)": seeds with no or NaN results, missing or unfinished


@dataclass(frozen=True)
class Table:
    """One ablation's table; ``stats`` is its long numeric summary (every metric), written as CSV.

    ``baseline`` is the baseline every row shares (None when there is none or when the rows' differ: ``mixed``).
    """

    ablation: str
    baseline: str | None
    columns: list[str]
    rows: list[Row]
    stats: pd.DataFrame
    validity: dict[str, str] | None = None  # key -> the oracle control's verdict on it (composites only shown)

    @property
    def headers(self) -> list[str]:
        said = self.validity or {}
        return [HEADERS.get(c, c) + (f" ({said[c]})" if c in COMPOSITES and c in said else "") for c in self.columns]

    @property
    def mixed(self) -> bool:
        """True when the rows are compared with different baselines (the table then has a ``vs`` column)."""
        return len({row.baseline for row in self.rows}) > 1

    @property
    def caption(self) -> str:
        head = (f"{self.ablation}: mean ± std over seeds (n); bold: the best of a column, only where its "
                "comparison against the runner-up holds after BH over all such comparisons")  # fmt: skip
        if not self.baseline and not self.mixed:
            return head + "; no baseline, so no Δ."
        against = "each row's baseline (column vs)" if self.mixed else self.baseline
        return (f"{head}; Δ vs {against}: the mean of the per-seed differences on the seeds both ran, with its "
                "95% Student-t interval and p of the paired t-test († no shared seeds: Welch's interval and test), "
                "then the adjusted p (Holm within the ablation's pre-declared primary family, BH over every other "
                "comparison of the report); better/worse only where the adjusted p < 0.05; sd Δ: std of the "
                "per-seed differences; MDE (planning): the smallest true Δ these many pairs detect with power 0.8 "
                "at α = 0.05 given the metric's pilot sd (softclip/metrics.yaml), not these seeds'; below 2 pairs "
                "no interval or p (n too small).")  # fmt: skip


def choose_metrics(summary: pd.DataFrame, requested: Sequence[str] | None = None) -> list[str]:
    """The requested metric keys (default :data:`HEADLINE`) that the summary has, in the requested order."""
    present = set(summary["key"])
    return [k for k in (requested or HEADLINE) if k in present]


def ablation_table(summary: pd.DataFrame, ablation: str, columns: Sequence[str], validity: dict[str, str] | None = None,
                   flags: Callable[[str, str], str] | None = None) -> Table:  # fmt: skip
    """Build the table of ``ablation`` from a :func:`~softclip.report.stats.summarize` frame; ``validity``: key ->
    the control's verdict (shown on composites); ``flags(ablation, variant)``: the row's failed-seed flag."""
    part = summary[summary["ablation"] == ablation]
    by_key = {(r["variant"], r["key"]): r for r in part.to_dict("records")}
    variants = part.drop_duplicates("variant")
    labels = dict(zip(variants["variant"], variants["label"], strict=True))
    decimals = {key: column_decimals(part.loc[part["key"] == key, "mean"]) for key in columns}
    rows = []
    for rec in variants.to_dict("records"):
        seeds = set().union(*(s.split(",") for s in part.loc[part["variant"] == rec["variant"], "seeds"] if s))
        found = [(key, by_key.get((rec["variant"], key))) for key in columns]
        cells = [None if cell is None else {**cell, "decimals": decimals[key]} for key, cell in found]
        base = rec["baseline"] if isinstance(rec["baseline"], str) and rec["baseline"] else None
        own = base is not None and rec["variant"] == base
        vs = str(labels.get(base, base)) if base and not own else ""
        failed = flags(ablation, rec["variant"]) if flags else ""
        rows.append(Row(rec["variant"], rec["label"], len(seeds), own, cells, base, vs, failed))
    shared = {row.baseline for row in rows}
    baseline = next(iter(shared)) if len(shared) == 1 else None
    return Table(ablation, baseline, list(columns), rows, part.reset_index(drop=True), validity)


def build_tables(summary: pd.DataFrame, metrics: Sequence[str] | None = None, validity: dict[str, str] | None = None,
                 flags: Callable[[str, str], str] | None = None) -> dict[str, Table]:  # fmt: skip
    """{ablation: table} for every ablation in ``summary`` (sorted by name)."""
    return {a: ablation_table(summary, a, choose_metrics(summary[summary["ablation"] == a], metrics), validity, flags)
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
    """``+1.2 [−0.3, 2.8], p=0.04; sd Δ 1.1, MDE 2.1``, ``+0.5, n too small``, or empty for the baseline / a
    missing baseline."""
    if not math.isfinite(cell.get("delta", math.nan)):
        return ""
    places = cell.get("decimals")
    text = fmt_num(cell["delta"], style, signed=True, decimals=places)
    if not math.isfinite(cell.get("ci_low", math.nan)):
        return text + ", " + N_TOO_SMALL
    mark = style.dagger if cell["pairing"] == "unpaired" else ""
    lo, hi = (fmt_num(cell[k], style, decimals=places) for k in ("ci_low", "ci_high"))
    text += f" [{lo}, {hi}]{mark}"
    if math.isfinite(cell["p_ttest"]):
        text += ", p" + fmt_p(cell["p_ttest"], style)
    elif math.isfinite(cell["p_welch"]):
        text += ", p(Welch)" + fmt_p(cell["p_welch"], style)
    if math.isfinite(cell.get("p_adj", math.nan)):
        text += (", Holm p" if cell.get("family") == PRIMARY else ", BH p") + fmt_p(cell["p_adj"], style)
    if cell.get("finding") == EQUIVALENT:
        text += f", equivalent within ±{fmt_num(cell['margin'], style)}"
    power = []
    if math.isfinite(cell.get("sd_diff", math.nan)):
        power.append("sd Δ " + fmt_num(cell["sd_diff"], style, decimals=places))
    if math.isfinite(cell.get("mde", math.nan)):
        power.append("MDE " + fmt_num(cell["mde"], style, decimals=places))
    return text + ("; " + ", ".join(power) if power else "")


def findings(table: Table, style: Style | None = None) -> list[str]:
    """One sentence per compared variant saying what its comparisons support, metric by metric: better or worse
    (adjusted p < 0.05), equivalent within the declared margin (TOST), inconclusive, or n too small."""
    style = style or Style()
    out = []
    for row in table.rows:
        said: dict[str, list[str]] = {}
        for header, cell in zip(table.headers, row.cells, strict=True):
            if cell is None or not cell.get("finding"):
                continue
            places = cell.get("decimals")
            if cell["finding"] in (BETTER, WORSE):
                lo, hi = (fmt_num(cell[k], style, decimals=places) for k in ("ci_low", "ci_high"))
                text = (f"{header} {fmt_num(cell['delta'], style, signed=True, decimals=places)} [{lo}, {hi}], "
                        f"adjusted p{fmt_p(cell['p_adj'], style)}")  # fmt: skip
            elif cell["finding"] == EQUIVALENT:
                text = f"{header} (±{fmt_num(cell['margin'], style)}, TOST p{fmt_p(cell['p_tost'], style)})"
            else:
                text = header
            said.setdefault(cell["finding"], []).append(text)
        if not said:
            continue
        parts = [f"{FINDING_WORDS[kind]} {', '.join(said[kind])}" for kind in FINDING_WORDS if kind in said]
        out.append(f"{row.label} vs {row.vs}: " + "; ".join(parts) + ".")
    return out


FINDING_WORDS = {
    BETTER: "better on", WORSE: "worse on", EQUIVALENT: "equivalent within the declared margin on",
    INCONCLUSIVE: "inconclusive (neither a difference after correction nor equivalence) on",
    NOT_COUNTED: "not counted (coincides with another metric, or a diagnostic) on", N_TOO_SMALL: "n too small on",
}  # fmt: skip


def row_name(row: Row) -> str:
    return row.label + (" (baseline)" if row.is_baseline else "") + (f" [flagged: {row.failed}]" if row.failed else "")


def lead_cells(table: Table, row: Row, escape: Callable[[str], str]) -> list[str]:
    """The cells before the metrics: variant, vs (only in a ``mixed`` table), n."""
    return [escape(row_name(row)), *([escape(row.vs)] if table.mixed else []), str(row.n)]


def lead_headers(table: Table) -> tuple[list[str], str]:
    """Headers and alignment of :func:`lead_cells`."""
    return (["variant", "vs", "n"], "llr") if table.mixed else (["variant", "n"], "lr")


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
        cells = lead_cells(table, row, md_escape)
        for cell in row.cells:
            if cell is None:
                cells.append("")
                continue
            main = cell_main(cell, style)
            delta = cell_delta(cell, style)
            cells.append((f"**{main}**" if cell["best"] else main) + (f" ({delta})" if delta else ""))
        rows.append(cells)
    heads, align = lead_headers(table)
    return Grid([*heads, *(md_escape(h) for h in table.headers)], rows, align + "r" * len(table.columns))


def html_table_grid(table: Table) -> Grid:
    """The table as an HTML grid (best cells in ``<strong>``, Δ on a second line)."""
    style = Style()
    rows = []
    for row in table.rows:
        cells = lead_cells(table, row, html.escape)
        for cell in row.cells:
            if cell is None:
                cells.append("")
                continue
            main = html.escape(cell_main(cell, style))
            delta = html.escape(cell_delta(cell, style))
            cells.append((f"<strong>{main}</strong>" if cell["best"] else main)
                         + (f"<br><small>{delta}</small>" if delta else ""))  # fmt: skip
        rows.append(cells)
    heads, align = lead_headers(table)
    return Grid([*heads, *table.headers], rows, align + "r" * len(table.columns))


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
    heads, align = lead_headers(table)
    heads = ["$n$" if h == "n" else h for h in heads]
    lines = ["% " + latex_escape(table.caption), r"% requires \usepackage{booktabs}",
             r"\begin{tabular}{" + align + "r" * len(table.columns) + "}", r"\toprule",
             " & ".join([*heads, *(latex_escape(h) for h in table.headers)]) + r" \\", r"\midrule"]  # fmt: skip
    for row in table.rows:
        mains, deltas = [], []
        for cell in row.cells:
            main = cell_main(cell, style) if cell else ""
            mains.append(r"\textbf{" + main + "}" if cell and cell["best"] else main)
            delta = cell_delta(cell, style) if cell else ""
            deltas.append(r"{\scriptsize " + delta + "}" if delta else "")
        lines.append(" & ".join([*lead_cells(table, row, latex_escape), *mains]) + r" \\")
        if any(deltas):
            lines.append(" & ".join([""] * len(heads) + deltas) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


@writer("csv", "csv")
def _csv(table: Table) -> str:
    """The long numeric summary of the ablation (every metric), ``best`` as a boolean column; a ``mixed`` table
    gets a ``vs`` column (the baseline's label) after ``baseline``."""
    stats = table.stats
    if table.mixed:
        vs = {row.variant: row.vs for row in table.rows}
        stats = stats.copy()
        stats.insert(stats.columns.get_loc("baseline") + 1, "vs", stats["variant"].map(vs))
    return stats.to_csv(index=False, lineterminator="\n")

