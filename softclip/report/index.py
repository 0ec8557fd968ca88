"""``build_report``: run folders in, a folder of tables, figures, the tidy frame and an index page out.

Layout of ``out/``::

    report.md, report.html         the index: command, machine, runs, every table and figure, paper reference
    frame.csv                      the tidy result frame (one row per run x metric)
    curves.csv                     the training/evaluation curves of metrics.jsonl (one row per run x step x key)
    configs.csv                    the config values the report shows (β, τ, the paper's hyperparameters) per run
    stats.csv                      the summary of every (ablation, variant, metric), raw and adjusted p
    contrasts.csv                  declared A:B primary contrasts that are not a variant-vs-baseline row
    interactions.csv               differences of differences (compare_within levels, 2x2 factorials)
    validity.csv                   per metric: does the oracle control beat hard targets on it
    seeds.csv                      per variant: expected, fine, failed, unfinished and missing seeds
    calibration.csv                Δ vs measured target precision (only with an oracle precision knob)
    families.json                  each ablation's primary family as used (and where it was declared)
    findings.md                    what survives correction, in words (generated)
    tables/<ablation>.{md,tex,html,csv}
    figures/<kind>_<ablation>.png

Every file is written atomically, and the same inputs give byte-identical outputs (no timestamps unless
``generated`` is passed). ``frame.csv`` (with ``curves.csv`` beside it) is itself an input: a report can be
rebuilt from an earlier one without its run folders.
"""

from __future__ import annotations

import difflib
import html
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from softclip import atomic
from softclip.metric_catalog import load_catalog
from softclip.report import families as fams
from softclip.report.calibration import calibration_table
from softclip.report.contrasts import declared_contrasts, interactions
from softclip.report.discover import Collection, ReportError, load_runs
from softclip.report.document import (
    Block,
    Bullets,
    Code,
    Document,
    Grid,
    Heading,
    Image,
    Links,
    Para,
    Tables,
    md_escape,
    render_html,
    render_md,
)
from softclip.report.failures import flag, seed_status
from softclip.report.figures import HEATMAP_KEYS, FigureData, build_figures, slug
from softclip.report.findings import write_findings
from softclip.report.frame import all_curves, config_values, frame_from_runs
from softclip.report.hardware import runs_hardware
from softclip.report.multiplicity import Family, correct
from softclip.report.paper import DEFAULT_REFERENCE, load_reference, reference_blocks, reference_keys
from softclip.report.stats import decide, summarize
from softclip.report.tables import (
    HEADLINE,
    WRITERS,
    Table,
    build_tables,
    findings,
    html_table_grid,
    md_table_grid,
)
from softclip.report.validity import metric_validity, short_verdicts

log = logging.getLogger("softclip.report")

MEASURED_NOTE = (
    "Every number in this report is measured: it is computed from the result JSON (eval/*.json) of the runs "
    "listed below, as mean ± std over seeds and, against each variant's baseline (its ablation's, or the one "
    "named in the table's vs column), the mean per-seed difference Δ with its 95% Student-t interval, the paired "
    "t-test's raw p and its adjusted p (Holm within each ablation's pre-declared primary family, "
    "Benjamini–Hochberg over every other comparison). better/worse come only from the adjusted p; "
    "\"equivalent\" only from a TOST within the margin declared per metric (softclip/metrics.yaml); the MDE is a "
    "planning figure from a stated pilot sd. findings.md says in words what survives."
)
CURVE_FIGURES = ("train_loss", "eval")


def _check_baseline(collection: Collection, baseline: str | None) -> None:
    variants = sorted({run.variant for run in collection.runs})
    if baseline is not None and baseline not in variants:
        hint = difflib.get_close_matches(baseline, variants, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ReportError(f"--baseline {baseline!r} is not a variant of any run; variants: {', '.join(variants)}{extra}")


def _parse_metrics(metrics: Sequence[str] | str | None, frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(requested keys, the ones no run has); raises on a key that is neither catalogued nor in the runs, and
    when none of the requested keys exist."""
    if metrics is None:
        return list(HEADLINE), []
    keys = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    present = sorted(set(frame["key"]))
    catalog = load_catalog()
    for key in keys:
        if key not in present and not catalog.is_known(key):
            hint = catalog.closest(key, present)
            raise ReportError(f"--metrics: unknown metric {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
    missing = [k for k in keys if k not in present]
    if keys and len(missing) == len(keys):
        hints = {k: difflib.get_close_matches(k, present, n=1) for k in missing}
        said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ReportError(f"none of the requested metrics exist in these runs: {said}")
    return keys, missing


def _remove_stale(folder: Path, keep: set[Path], suffixes: set[str]) -> None:
    """Delete report files from an earlier build that this build did not write."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and path.suffix in suffixes and path.resolve() not in keep:
                path.unlink()


def write_text(path: Path, text: str) -> Path:
    """Write a report file atomically (:func:`softclip.atomic.write_text`), its folder created and a final
    newline added where missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, text if not text or text.endswith("\n") else text + "\n")


def carried_figures(folder: Path, collection: Collection, curves: pd.DataFrame,
                    written: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:  # fmt: skip
    """Curve figures an earlier build left in ``folder`` that this one cannot redraw: only when every run comes
    from a saved frame without curves; kept (and listed) rather than deleted."""
    frames_only = collection.runs and all(r.meta_source.startswith("frame:") for r in collection.runs)
    if not frames_only or not curves.empty or not folder.is_dir():
        return []
    done = {p.resolve() for _, p in written}
    ablations = {slug(a): a for a in {r.ablation for r in collection.runs}}
    out = []
    for path in sorted(folder.glob("*.png")):
        names = [path.stem[len(kind) + 1 :] for kind in CURVE_FIGURES if path.stem.startswith(kind + "_")]
        if names and names[0] in ablations and path.resolve() not in done:
            out.append((ablations[names[0]], path))
    return out


def write_tables(tables: Mapping[str, Table], out: Path) -> dict[str, dict[str, Path]]:
    """Every table in every registered format: {ablation: {format: path}}."""
    written: dict[str, dict[str, Path]] = {}
    for ablation, table in tables.items():
        for fmt in WRITERS.names():
            writer = WRITERS.get(fmt)
            path = write_text(out / "tables" / f"{slug(ablation)}.{writer.ext}", writer.render(table))
            written.setdefault(ablation, {})[fmt] = path
    return written


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies inside it, else absolute (POSIX separators)."""
    rel = os.path.relpath(path)
    return Path(os.path.abspath(path) if rel.startswith("..") else rel).as_posix()


def run_root(frame: pd.DataFrame) -> str:
    """The folder every run folder of ``frame`` is under, as :func:`shown_path` shows it."""
    return shown_path(os.path.commonpath([os.path.abspath(p) for p in frame["run_dir"].unique()]))


def _runs_grid(frame: pd.DataFrame, root: str, seeds: pd.DataFrame | None = None) -> Tables:
    """One row per (ablation, variant): label, runs, seeds, the seeds without usable results (failed, diverged,
    unfinished or missing: :mod:`~softclip.report.failures`) and the folder holding them, relative to ``root``."""
    bad = {} if seeds is None else {(r["ablation"], r["variant"]): r["detail"] for r in seeds.to_dict("records")}
    per = frame.drop_duplicates(["ablation", "variant", "seed", "run_dir"])
    rows = []
    for (ablation, variant), group in per.groupby(["ablation", "variant"], sort=False):
        seeds = sorted(group["seed"].unique())
        dirs = [os.path.abspath(p) for p in group["run_dir"]]
        folder = Path(os.path.relpath(os.path.commonpath(dirs), os.path.abspath(root))).as_posix()
        if len(dirs) == 1:
            folder = Path(folder).parent.as_posix() + "/" if Path(folder).parent.as_posix() != "." else "./"
        rows.append([str(ablation), str(variant), str(group["label"].iloc[0]), str(len(group)),
                     ", ".join(map(str, seeds)), bad.get((ablation, variant)) or "none", folder])  # fmt: skip
    headers = ["ablation", "variant", "label", "runs", "seeds", "without results", "folder"]
    md = Grid(headers, [[md_escape(c) for c in r] for r in rows], "lllrlll")
    return Tables(md, Grid(headers, [[html.escape(c) for c in r] for r in rows], "lllrlll"))


def _inputs_text(inputs: Sequence[str]) -> str:
    """The inputs when they are few, else how many (a reproduce run passes every run folder)."""
    return ", ".join(map(shown_path, inputs)) if len(inputs) <= 3 else f"{len(inputs)} paths"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _machine_lines(machine: Mapping[str, object] | str | None) -> str:
    if isinstance(machine, Mapping):
        return "\n".join(f"{k}: {v}" for k, v in machine.items())
    return str(machine)


def baseline_text(table: Table) -> str:
    """The line under an ablation's heading that says what its Δ is against."""
    if table.mixed:
        named = dict.fromkeys(row.vs or row.label for row in table.rows if row.baseline)
        return "Each variant is compared with its own baseline (column vs): " + ", ".join(named) + "."
    return f"Baseline: {table.baseline}." if table.baseline else "No baseline variant: no Δ column."


def compose(doc: Document, *, title: str, generated: str | None, command: str | None, machine: object,
            frame: pd.DataFrame, collection: Collection, tables: Mapping[str, Table],
            table_files: Mapping[str, Mapping[str, Path]], figures: list[tuple[str, Path]], missing: list[str],
            paper: list[Block], out: Path, carried: Sequence[tuple[str, Path]] = (),
            stats: Analysis | None = None) -> Document:  # fmt: skip
    """Assemble the index page."""
    rel = lambda p: Path(os.path.relpath(p, out)).as_posix()  # noqa: E731
    doc.add(Heading(title, 1))
    if generated:
        doc.add(Para(f"generated: {generated}"))
    doc.add(Para(MEASURED_NOTE))
    if command:
        doc.add(Heading("Command"), Code(command))
    if machine:
        doc.add(Heading("Machine"), Code(_machine_lines(machine)))
    counts = (plural(frame.drop_duplicates(["ablation", "run_dir"]).shape[0], "run"),
              plural(frame["ablation"].nunique(), "ablation"), plural(len(collection.skipped), "skipped file"))  # fmt: skip
    root = run_root(frame)
    doc.add(Heading("Runs"),
            Para("{} in {}, {}; inputs: ".format(*counts) + _inputs_text(collection.inputs)
                 + f". Run folders are under {root}/ (the folder column is relative to it)."),
            _runs_grid(frame, root, stats.seeds if stats is not None else None))  # fmt: skip
    if collection.notes:
        doc.add(Heading("Notes"), Bullets(list(collection.notes)))
    if collection.skipped:
        doc.add(Heading("Skipped files"), Bullets([f"{s.path}: {s.reason}" for s in collection.skipped]))
    if missing:
        doc.add(Para(f"Requested metrics found in no run: {', '.join(missing)}."))
    if stats is not None:
        doc.add(Heading("Multiplicity and findings"), Para(stats.family_note),
                Links([("findings.md", "findings.md")], lead="What survives correction, in words:"))
    for ablation, table in tables.items():
        doc.add(Heading(f"Ablation: {ablation}"), Para(baseline_text(table)))
        if table.columns:
            doc.add(Tables(md_table_grid(table), html_table_grid(table), table.caption))
            said = findings(table)
            if said:
                doc.add(Para("What the intervals support (table columns):"), Bullets(said))
        else:
            doc.add(Para("None of the table metrics is present; see the CSV for every metric."))
        doc.add(Links([(fmt, rel(p)) for fmt, p in table_files[ablation].items()], lead="Tables:"))
        doc.add(*[Image(rel(p), p.stem) for a, p in figures if a == ablation])
    if carried:
        doc.add(Para("Curve figures carried over from the earlier build of this folder (the saved frame it was "
                     "rebuilt from holds no curves): " + ", ".join(rel(p) for _, p in carried) + "."))
    doc.add(Heading("Paper reference"), *paper)
    data = ("frame.csv", "curves.csv", "configs.csv", "stats.csv", "contrasts.csv", "interactions.csv",
            "validity.csv", "seeds.csv", "calibration.csv", "families.json", "findings.md")  # fmt: skip
    optional = ("curves.csv", "calibration.csv")
    doc.add(Heading("Files"), Links([(n, n) for n in data if (out / n).is_file() or n not in optional], lead="Data:"))
    return doc


@dataclass
class Analysis:
    """Every statistic of a report, corrected together (see :func:`analyse`)."""

    summary: pd.DataFrame
    contrasts: pd.DataFrame
    interactions: pd.DataFrame
    validity: pd.DataFrame
    seeds: pd.DataFrame
    families: dict[str, Family]
    family_note: str


def analyse(frame: pd.DataFrame, collection: Collection, ablations: str | Path | None, n_boot: int) -> Analysis:
    """Summary, declared contrasts and interactions, corrected as one report (Holm per primary family, BH over
    the rest), then the findings from the adjusted p, metric validity and the seed status."""
    names = sorted(frame["ablation"].unique())
    families = fams.resolve(collection, names, ablations)
    summary = summarize(frame, n_boot=n_boot, adjust=False)
    contrasts = declared_contrasts(frame, families, n_boot)
    inter = interactions(frame)
    parts = [summary, *([contrasts] if not contrasts.empty else []), inter]
    corrected = correct(parts, families)
    for part in corrected:
        part["finding"] = decide(part) if not part.empty else pd.Series(dtype=object)
    summary, inter = corrected[0], corrected[-1]
    contrasts = corrected[1] if len(corrected) == 3 else contrasts
    kinds: dict[str, list[str]] = {}
    for ablation, fam in sorted(families.items()):
        kinds.setdefault(re.sub(r"[^ ]*/[^/ ]+\.yaml", "ablations/<name>.yaml", fam.source), []).append(ablation)
    without = [a for a in names if a not in families]
    note = ("Primary families from " + "; ".join(f"{k} ({', '.join(v)})" for k, v in kinds.items()) + "."
            if kinds else "No primary family found.")  # fmt: skip
    if without:
        note += " Without one (all comparisons in the BH family): " + ", ".join(without) + "."
    return Analysis(summary, contrasts, inter, metric_validity(summary, frame), seed_status(collection), families,
                    note)


def write_statistics(out: Path, frame: pd.DataFrame, collection: Collection, stats: Analysis,
                     machine: Mapping[str, object] | str | None) -> dict[str, object]:  # fmt: skip
    """stats.csv, contrasts/interactions/validity/seeds(/calibration).csv, families.json and findings.md; returns
    the machine description (the report's and the runs' own record) the index shows."""
    csv = lambda df: df.to_csv(index=False, lineterminator="\n")  # noqa: E731
    write_text(out / "stats.csv", csv(stats.summary))
    for name, part in (("contrasts", stats.contrasts), ("interactions", stats.interactions),
                       ("validity", stats.validity), ("seeds", stats.seeds)):  # fmt: skip
        write_text(out / f"{name}.csv", csv(part))
    write_text(out / "families.json", fams.to_json(stats.families))
    calib = calibration_table(frame, stats.summary)
    if not calib.empty:
        write_text(out / "calibration.csv", csv(calib))
    hardware = {**(dict(machine) if isinstance(machine, Mapping) else {"machine": str(machine or "not given")}),
                **runs_hardware(collection)}  # fmt: skip
    labels = {(a, v): lab for a, v, lab in frame[["ablation", "variant", "label"]].drop_duplicates().itertuples(index=False)}
    inputs = collection.inputs
    sources = [shown_path(p) for p in inputs] if len(inputs) <= 3 else [_inputs_text(inputs)]
    write_text(out / "findings.md", write_findings(
        pd.concat([stats.summary, stats.contrasts], ignore_index=True), stats.interactions, stats.validity,
        stats.seeds, stats.families, hardware, labels, sources, stats.family_note, calib))  # fmt: skip
    return hardware


def build_report(
    paths: Sequence[str | Path], out: str | Path, *, title: str = "softclip report", baseline: str | None = None,
    metrics: Sequence[str] | str | None = None, command: str | None = None,
    machine: Mapping[str, object] | str | None = None, n_boot: int = 10000,
    paper_reference: str | Path | None = DEFAULT_REFERENCE, generated: str | None = None,
    ablations: str | Path | None = None,
) -> Path:  # fmt: skip
    """Build the report of the runs under ``paths`` into ``out``; returns the path of ``report.md``.

    Args:
        paths: run folders, parent folders (searched recursively) or glob patterns.
        out: output folder (created).
        title: page title.
        baseline: comparison variant for every variant of each ablation that has it (default: each variant's
            own, from its ablation.json: the ablation's baseline, or per ``compare_within`` factor level).
        metrics: table columns as ``benchmark/metric`` keys (list or comma-separated); default the headline set.
        command: the exact command line, shown verbatim.
        machine: machine description (mapping or text), shown verbatim.
        n_boot: bootstrap resamples per comparison.
        paper_reference: the paper-numbers YAML (None: no paper section).
        generated: an optional "generated" line (e.g. a timestamp); omitted by default for reproducible output.
        ablations: folder of ablation files, read by ablation name for the primary families the runs (or a
            saved frame's families.json) do not carry; None: none.

    Raises:
        ReportError: no run folders, no readable results, an unknown baseline, or none of ``metrics`` present.
    """
    if n_boot < 1:
        raise ReportError(f"n_boot must be >= 1, got {n_boot}")
    out = Path(out)
    collection = load_runs(paths)
    _check_baseline(collection, baseline)
    frame = frame_from_runs(collection, baseline=baseline)
    if frame.empty:
        raise ReportError("no readable results (eval/*.json with a 'metrics' mapping) under: "
                          + ", ".join(collection.inputs))  # fmt: skip
    keys, missing = _parse_metrics(metrics, frame)
    stats = analyse(frame, collection, ablations, n_boot)
    summary = stats.summary
    tables = build_tables(summary, keys, short_verdicts(stats.validity),
                          lambda a, v: flag(stats.seeds, a, v))  # fmt: skip
    table_files = write_tables(tables, out)
    reference = load_reference(paper_reference) if paper_reference is not None else None
    shown = list(dict.fromkeys([*HEATMAP_KEYS, *reference_keys(reference)]))
    configs = config_values(collection, shown)
    curves = all_curves(collection)
    data = FigureData(frame, curves, configs, keys, summary)
    figures = build_figures(data, out / "figures")
    carried = carried_figures(out / "figures", collection, curves, figures)
    figures += carried
    write_text(out / "frame.csv", frame.to_csv(index=False, lineterminator="\n"))
    if not curves.empty or not (out / "curves.csv").is_file():
        write_text(out / "curves.csv", curves.to_csv(index=False, lineterminator="\n"))
    write_text(out / "configs.csv", configs.to_csv(index=False, lineterminator="\n"))
    hardware = write_statistics(out, frame, collection, stats, machine)
    paper = reference_blocks(reference, summary, collection.runs)
    doc = compose(Document(), title=title, generated=generated, command=command, machine=hardware, frame=frame,
                  collection=collection, tables=tables, table_files=table_files, figures=figures, missing=missing,
                  paper=paper, out=out, carried=carried, stats=stats)  # fmt: skip
    write_text(out / "report.html", render_html(doc.blocks, title))
    report = write_text(out / "report.md", render_md(doc.blocks))
    keep = {p.resolve() for files in table_files.values() for p in files.values()} | {p.resolve() for _, p in figures}
    _remove_stale(out / "tables", keep, {".md", ".tex", ".html", ".csv"})
    _remove_stale(out / "figures", keep, {".png", ".svg"})
    log.info("report: %s (%d runs, %d tables, %d figures, %d skipped files)", report,
             frame.drop_duplicates(["ablation", "run_dir"]).shape[0], len(tables), len(figures),
             len(collection.skipped))  # fmt: skip
    return report
