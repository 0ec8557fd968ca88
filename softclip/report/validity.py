"""Metric validity: does the positive control (the oracle's true-match targets) beat hard targets on a metric?

A metric the oracle does not move cannot tell a good soft target from a bad one here; composites (RSUM) carry
this verdict in their table header. The control is the first found of: ``targets``' ``oracle`` (vs ``hard``),
a calibration's oracle at precision 1, ``zoo``'s InfoNCE ``oracle``; its verdict is its *adjusted* finding.
"""

from __future__ import annotations

import math

import pandas as pd

from softclip.report.stats import BETTER, EQUIVALENT, INCONCLUSIVE, N_TOO_SMALL, WORSE

CONTROL_ABLATIONS = ("targets", "calibration", "zoo")
VERDICTS = {BETTER: "oracle moves it", WORSE: "oracle lowers it", INCONCLUSIVE: "oracle does not move it",
            EQUIVALENT: "oracle does not move it", N_TOO_SMALL: "control n too small"}  # fmt: skip
SHORT = {BETTER: "validated by the oracle", WORSE: "oracle lowers it", INCONCLUSIVE: "oracle does not move it",
         EQUIVALENT: "oracle does not move it", N_TOO_SMALL: "control n too small"}  # fmt: skip
COLUMNS = ["key", "ablation", "variant", "baseline", "delta", "ci_low", "ci_high", "n_pairs", "p", "p_adj",
           "finding", "verdict"]  # fmt: skip


def control_rows(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of the control variant (see the module docstring); empty when the report has none."""
    compared = summary[summary["delta"].notna()]
    for ablation in CONTROL_ABLATIONS:
        part = compared[compared["ablation"] == ablation]
        names = {"oracle"}
        if "precision" in frame.columns:  # a calibration: the oracle variant at precision 1
            own = frame[(frame["ablation"] == ablation) & (pd.to_numeric(frame["precision"], errors="coerce") == 1)]
            names |= set(own["variant"])
        rows = part[part["variant"].isin(names)]
        if not rows.empty:
            first = rows["variant"].iloc[0]
            return rows[rows["variant"] == first]
    return summary.iloc[0:0]


def metric_validity(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per metric key the control was compared on (:data:`COLUMNS`)."""
    rows = control_rows(summary, frame)
    out = rows[[c for c in COLUMNS if c in rows.columns and c != "verdict"]].copy()
    out["verdict"] = [VERDICTS.get(f, "") for f in out["finding"]]
    return out.reindex(columns=COLUMNS).reset_index(drop=True)


def short_verdicts(validity: pd.DataFrame) -> dict[str, str]:
    """key -> a short label of the control's verdict (for table headers)."""
    return {r["key"]: SHORT.get(r["finding"], "") for r in validity.to_dict("records") if r["finding"] in SHORT}


def validated(validity: pd.DataFrame, key: str) -> bool | None:
    """True when the control moves ``key``; False when it does not; None when there is no control verdict."""
    hit = validity[validity["key"] == key]
    if hit.empty or not isinstance(hit["finding"].iloc[0], str) or not math.isfinite(hit["delta"].iloc[0]):
        return None
    return bool(hit["finding"].iloc[0] == BETTER)
