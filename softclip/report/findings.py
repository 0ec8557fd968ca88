"""``findings.md``: what survives correction, in words, generated from the report's statistics (never typed).

Per ablation: its primary family and where it was declared; the verdicts that survive their correction (Holm in
the primary family, BH elsewhere) with Δ [95% CI], the adjusted p and the pairs they rest on; equivalence
verdicts (TOST within the declared margin); interactions (differences of differences); failed seeds. Then metric
validity (the oracle control), the machine and what reproduces where. better/worse come only from ``finding``,
which :func:`~softclip.report.stats.decide` sets from the adjusted p.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from softclip.report.multiplicity import PRIMARY, Family
from softclip.report.stats import BETTER, EQUIVALENT, WORSE
from softclip.report.tables import COMPOSITES, HEADERS, HEADLINE, Style, fmt_num, fmt_p
from softclip.report.validity import short_verdicts

STYLE = Style()
SHOWN = set(HEADLINE)  # secondary verdicts shown in words; the rest are counted (all are in stats.csv)


def name(key: str) -> str:
    return HEADERS.get(key, key)


def interval(r: Mapping) -> str:
    lo, hi = (fmt_num(r[k], STYLE) for k in ("ci_low", "ci_high"))
    return f"{fmt_num(r['delta'], STYLE, signed=True)} [{lo}, {hi}]"


def adjusted(r: Mapping) -> str:
    rule = "Holm" if r.get("family") == PRIMARY else "BH"
    return f"{rule}-adjusted p{fmt_p(r['p_adj'], STYLE)} (raw p{fmt_p(r['p'], STYLE)})"


def short(r: Mapping, notes: Mapping[str, str] | None = None) -> str:
    """``i2t sem. mAP −5.79 [−6.77, −4.81] (Holm p<0.001)``; a composite gets the control's verdict on it."""
    rule = "Holm" if r.get("family") == PRIMARY else "BH"
    note = (notes or {}).get(str(r["key"]))
    return f"{name(r['key'])} {interval(r)} ({rule} p{fmt_p(r['p_adj'], STYLE)}{'; ' + note if note else ''})"


def equivalent(r: Mapping) -> str:
    lo, hi = (fmt_num(r[k], STYLE) for k in ("ci90_low", "ci90_high"))
    return (f"{name(r['key'])} within ±{fmt_num(r['margin'], STYLE)} (90% interval [{lo}, {hi}], "
            f"TOST p{fmt_p(r['p_tost'], STYLE)})")  # fmt: skip


def variant_line(rows: pd.DataFrame, flagged: set[str], notes: Mapping[str, str] | None = None) -> str:
    """One contrast's surviving verdicts (primary first), equivalences and the pairs they rest on."""
    head = rows.iloc[0]
    parts = []
    for primary in (True, False):
        part = rows[(rows["family"] == PRIMARY) == primary]
        for word in (BETTER, WORSE):
            hits = part[part["finding"] == word]
            if not hits.empty:
                parts.append(f"{word} on " + ", ".join(short(r, notes) for r in hits.to_dict("records"))
                             + ("" if primary else " [secondary]"))  # fmt: skip
    equiv = rows[rows["finding"] == EQUIVALENT]
    if not equiv.empty:
        parts.append("equivalent on " + ", ".join(equivalent(r) for r in equiv.to_dict("records")))
    n = sorted({int(x) for x in rows["n_pairs"]})
    rest = f"{'/'.join(map(str, n))} paired seeds"
    if {str(head["variant"]), str(head["baseline"])} & flagged:
        rest += "; a side has seeds without usable results"
    return f"{head['label']} vs {head['vs']}: " + "; ".join(parts) + f" ({rest})."


def interaction_line(r: Mapping) -> str:
    head = f"{r['effect']} on {name(r['key'])}: {interval(r)}"
    if not math.isfinite(r.get("p_adj", math.nan)):
        return f"{head}; {int(r['n_pairs'])} paired seeds, too few or constant for a test."
    said = "the two differences differ" if r["p_adj"] < 0.05 else "no difference between the two differences is shown"
    return f"{head} (BH p{fmt_p(r['p_adj'], STYLE)}, {int(r['n_pairs'])} paired seeds): {said}."


def _with_labels(rows: pd.DataFrame, labels: Mapping[tuple[str, str], str]) -> pd.DataFrame:
    rows = rows.copy()
    rows["vs"] = [labels.get((a, b), b) for a, b in zip(rows["ablation"], rows["baseline"], strict=True)]
    if "label" not in rows:
        rows["label"] = [labels.get((a, v), v) for a, v in zip(rows["ablation"], rows["variant"], strict=True)]
    return rows


def family_line(family: Family | None) -> list[str]:
    if family is None or not family.pairs:
        return ["No primary family declared: every comparison of this ablation is in the report's BH family."]
    contrasts = ", ".join(f"{v} − {r}" for v, r in family.pairs)
    return [f"Primary family ({len(family.pairs)} × {len(family.metrics)}, Holm; declared in {family.source}): "
            f"{contrasts}, on {', '.join(name(m) for m in family.metrics)}.", *(f"({n})" for n in family.notes)]


def ablation_section(ablation: str, comps: pd.DataFrame, inter: pd.DataFrame, family: Family | None,
                     status: pd.DataFrame, notes: Mapping[str, str] | None = None) -> list[str]:  # fmt: skip
    """The lines of one ablation's section: verdicts per contrast on the table's metrics, the count of others,
    interactions on the primary metrics, flagged seeds."""
    out = [f"## {ablation}", "", *family_line(family), ""]
    flagged_rows = status[(status["ablation"] == ablation) & (status["detail"] != "")]
    flagged = set(flagged_rows["variant"])
    part = comps[comps["ablation"] == ablation]
    said = part[part["finding"].isin([BETTER, WORSE, EQUIVALENT])
                & (part["key"].isin(SHOWN) | (part["family"] == PRIMARY))]  # fmt: skip
    for _, rows in said.groupby(["variant", "baseline"], sort=False):
        out.append(f"- {variant_line(rows, flagged, notes)}")
    others = part[part["finding"].isin([BETTER, WORSE]) & ~part.index.isin(said.index)]
    if said.empty:
        out.append(f"- No difference or equivalence survives on the table's metrics ({len(part)} comparisons).")
    if len(others):
        out.append(f"- {len(others)} further differences on other metrics survive BH (stats.csv).")
    keys = set(family.metrics) if family is not None else set(HEADLINE[:3])
    mine = inter[inter["ablation"] == ablation]
    shown = mine[mine["key"].isin(keys)]
    if not shown.empty:
        out += ["", "Interactions (paired differences of differences, BH):"]
        out += [f"- {interaction_line(r)}" for r in shown.to_dict("records")]
        extra = mine[~mine["key"].isin(keys) & (mine["p_adj"] < 0.05)]
        if len(extra):
            out.append(f"- {len(extra)} interactions on other metrics survive BH (interactions.csv).")
    if not flagged_rows.empty:
        out += ["", "Seeds without usable results (each contrast states the pairs it rests on):"]
        out += [f"- {r['variant']}: {r['detail']}" for r in flagged_rows.to_dict("records")]
    return out + [""]


def validity_section(validity: pd.DataFrame) -> list[str]:
    out = ["## Metric validity (the oracle control)", ""]
    if validity.empty:
        return out + ["No oracle control in this report: no metric is validated here.", ""]
    head = validity.iloc[0]
    out.append(f"Control: {head['ablation']} / {head['variant']} vs {head['baseline']}; a metric is valid here when "
               "the oracle's true-match targets beat hard targets on it (adjusted p < 0.05).")
    out.append("")
    for r in validity[validity["key"].isin(SHOWN)].to_dict("records"):
        stat = f"{interval(r)}, {adjusted(r)}" if math.isfinite(r.get("p_adj", math.nan)) else "no test"
        out.append(f"- {name(r['key'])}: {r['verdict']} ({stat}).")
    moved = validity[validity["finding"] == BETTER]
    out += ["", f"Across all {len(validity)} metrics the oracle moves {len(moved)}: "
            + (", ".join(name(k) for k in moved["key"]) or "none") + ". A metric it does not move cannot tell a "
            "good soft target from a bad one here: read a gain on it as smoothing, not many-to-many structure.", ""]
    return out


def calibration_section(table: pd.DataFrame) -> list[str]:
    """The oracle's curve and every method's place on it, per calibrated metric."""
    if table is None or table.empty:
        return []
    out = ["## Calibration (Δ vs measured target precision)", ""]
    for (ablation, key), rows in table.groupby(["ablation", "key"], sort=True):
        curve = rows[rows["on_curve"]].sort_values("precision")
        points = "; ".join(f"precision {fmt_num(r['precision'], STYLE)}: {interval(r)}" for r in curve.to_dict("records"))
        out.append(f"- {ablation}, {name(key)}, oracle's curve: {points}.")
        for r in rows[~rows["on_curve"]].to_dict("records"):
            word = r["finding"] if r["finding"] in (BETTER, WORSE, EQUIVALENT) else "inconclusive"
            out.append(f"  - {r['label']}: measured precision {fmt_num(r['precision'], STYLE)}, Δ {interval(r)} "
                       f"({word}).")
    return out + [""]


def write_findings(comps: pd.DataFrame, inter: pd.DataFrame, validity: pd.DataFrame, status: pd.DataFrame,
                   families: Mapping[str, Family], machine: Mapping[str, str], labels: Mapping[tuple[str, str], str],
                   sources: Sequence[str], family_note: str, calibration: pd.DataFrame | None = None) -> str:  # fmt: skip
    """The text of ``findings.md``."""
    comps = _with_labels(comps[comps["delta"].notna()], labels)
    lines = ["# Findings", "",
             "Generated by `softclip report` from " + ", ".join(sources) + "; never edited by hand. Every verdict "
             "below survives its correction: Holm within each ablation's pre-declared primary family, "
             "Benjamini–Hochberg (q = 0.05) over every other comparison of the report. Δ is the mean per-seed "
             "difference with its 95% paired t-interval; better/worse only where the adjusted p < 0.05; "
             "\"equivalent\" only where a TOST (α = 0.05 per comparison, not adjusted) clears the margin declared "
             "in softclip/metrics.yaml; everything else is inconclusive. " + family_note, ""]  # fmt: skip
    notes = {k: v for k, v in short_verdicts(validity).items() if k in COMPOSITES}
    for ablation in sorted(comps["ablation"].unique()):
        lines += ablation_section(ablation, comps, inter, families.get(ablation), status, notes)
    lines += validity_section(validity)
    lines += calibration_section(calibration)
    lines += ["## Machine", "", "Where the report was built, and the runs' own record (meta.json):", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", "Reproducibility: bit-exact only on the same CPU family and thread count (and library versions); "
              "on another machine the numbers agree only within their intervals.", ""]  # fmt: skip
    return "\n".join(lines)
