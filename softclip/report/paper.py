"""The paper's published numbers (``reports/paper_reference.yaml``) beside the ones measured here.

Result rows show the paper's CLIP / SoftCLIP / Δ cells (empty where unsourced) and our Δ of the named SoftCLIP
variant against its baseline; hyperparameter rows show the paper's value and the values the runs used.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from softclip.report.discover import Run
from softclip.report.document import Block, Grid, Links, Para, Tables, md_escape
from softclip.report.tables import Style, cell_delta
from softclip.resources import data_file

log = logging.getLogger("softclip.report")

DEFAULT_REFERENCE = data_file("reports/paper_reference.yaml")
RESULT_HEADERS = ["quantity", "pre-training", "CLIP", "SoftCLIP", "Δ (paper)", "source", "ours: Δ (SynthScenes)",
                  "ours: from"]  # fmt: skip
HYPER_HEADERS = ["symbol", "meaning", "paper", "source", "config key", "ours: values in these runs"]


def load_reference(path: str | Path | None = None) -> dict[str, Any] | None:
    """The reference file as a mapping, or None (logged) when it is absent or unreadable."""
    path = Path(path) if path is not None else DEFAULT_REFERENCE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        log.warning("no paper reference table: %s", err)
        return None
    return data if isinstance(data, dict) else None


def _cell(value: Any) -> str:
    """A paper number as text; null / missing renders empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def find_ours(summary: pd.DataFrame, spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary row named by ``spec`` ({metric, variant[, ablation]}) that has a Δ, or None."""
    if not spec or summary.empty:
        return None
    rows = summary[(summary["key"] == spec.get("metric")) & (summary["variant"] == spec.get("variant"))]
    if spec.get("ablation"):
        rows = rows[rows["ablation"] == spec["ablation"]]
    rows = rows[rows["delta"].notna()]
    return rows.iloc[0].to_dict() if len(rows) else None


def _ours_text(row: dict[str, Any] | None, style: Style) -> tuple[str, str]:
    if row is None:
        return "", ""
    where = f"{row['ablation']}: {row['variant']} vs {row['baseline']}, {row['key']}, n={row['n']}"
    return cell_delta(row, style), where


def reference_keys(reference: dict[str, Any] | None) -> list[str]:
    """The dotted config keys the reference's hyperparameter table shows."""
    return [str(h["config"]) for h in (reference or {}).get("hyperparameters") or [] if h.get("config")]


def config_values_text(runs: Sequence[Run], key: str) -> str:
    """Distinct values of a dotted config key across ``runs``, sorted, comma-separated."""
    values = {run.config[key] for run in runs if key in run.config and isinstance(run.config[key], int | float | str)}
    return ", ".join(_cell(v) for v in sorted(values, key=lambda v: (str(type(v)), v)))


def _grids(rows: list[list[str]], headers: list[str], align: str) -> Tables:
    md = Grid([md_escape(h) for h in headers], [[md_escape(c) for c in r] for r in rows], align)
    return Tables(md, Grid(headers, [[html.escape(c) for c in r] for r in rows], align))


def reference_blocks(reference: dict[str, Any] | None, summary: pd.DataFrame, runs: Sequence[Run]) -> list[Block]:
    """Blocks of the "Paper reference" section (a note when there is no reference file)."""
    if not reference:
        return [Para("No paper reference file was found; see reports/paper_reference.yaml.")]
    paper = reference.get("paper") or {}
    style = Style()
    blocks: list[Block] = [Para(f"{paper.get('title', 'the paper')} (arXiv {paper.get('arxiv', '?')}). Empty cells: "
                                "no number we could source. Our Δ is measured on SynthScenes, not ImageNet.")]  # fmt: skip
    if paper.get("url"):
        blocks.append(Links([(str(paper["url"]), str(paper["url"]))], lead="Paper:"))
    results = []
    for item in reference.get("results") or []:
        ours, where = _ours_text(find_ours(summary, item.get("ours")), style)
        results.append([str(item.get("quantity", "")), str(item.get("pretraining", "")), _cell(item.get("clip")),
                        _cell(item.get("softclip")), _signed(item.get("delta")), str(item.get("source", "")),
                        ours, where])  # fmt: skip
    if results:
        blocks.append(_grids(results, RESULT_HEADERS, "llrrrlrl"))
    hypers = [[str(h.get("symbol", "")), str(h.get("meaning", "")), _cell(h.get("value")), str(h.get("source", "")),
               str(h.get("config", "")), config_values_text(runs, str(h.get("config", "")))]
              for h in reference.get("hyperparameters") or []]  # fmt: skip
    if hypers:
        blocks.append(_grids(hypers, HYPER_HEADERS, "llrlll"))
    return blocks


def _signed(value: Any) -> str:
    return f"{value:+g}" if isinstance(value, int | float) and not isinstance(value, bool) else _cell(value)
