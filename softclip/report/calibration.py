"""The oracle's dose–response curve: Δ vs CLIP against the *measured* target precision (the fraction of a soft
target's off-diagonal mass on truly matching pairs, ``target/precision`` per run), with every other method's
measured precision placed on it. An ablation qualifies when some of its variants carry a ``precision`` factor
(the oracle's knob) and its runs logged ``target/precision``."""

from __future__ import annotations

import pandas as pd

PRECISION_KEY = "target/precision"
KNOB = "precision"
CALIBRATED = ("zeroshot/top1", "retrieval/i2t_sem_map")
COLUMNS = ["ablation", "variant", "label", "on_curve", "knob", "precision", "precision_sd", "key", "delta", "ci_low",
           "ci_high", "n_pairs", "p_adj", "finding"]  # fmt: skip


def calibration_table(frame: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (ablation, variant, calibrated key): measured precision (mean, sd over seeds), the knob where
    the variant is on the oracle's curve, and its Δ vs its baseline with the 95% interval (:data:`COLUMNS`)."""
    if KNOB not in frame.columns or PRECISION_KEY not in set(frame["key"]):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for ablation, part in frame.groupby("ablation", sort=True):
        knobs = pd.to_numeric(part.drop_duplicates("variant").set_index("variant")[KNOB], errors="coerce")
        measured = part[part["key"] == PRECISION_KEY].groupby("variant")["value"].agg(["mean", "std"])
        if knobs.notna().sum() < 2 or measured.empty:
            continue
        stats = summary[(summary["ablation"] == ablation) & summary["key"].isin(CALIBRATED)]
        for r in stats[stats["delta"].notna()].to_dict("records"):
            v = r["variant"]
            if v not in measured.index:
                continue
            rows.append({"ablation": ablation, "variant": v, "label": r["label"], "on_curve": bool(pd.notna(knobs.get(v))),
                         "knob": knobs.get(v), "precision": measured.loc[v, "mean"], "precision_sd": measured.loc[v, "std"],
                         **{k: r[k] for k in ("key", "delta", "ci_low", "ci_high", "n_pairs", "p_adj", "finding")}})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
