"""Multiplicity: Holm within each ablation's pre-declared primary family, Benjamini–Hochberg over the rest.

Pure functions of p-value vectors (NaN = no test: left out of the count and NaN out), and :func:`correct`, which
assigns every comparison of a report to its family and fills ``family``, ``p_adj`` and ``finding``.

* Holm (step-down, FWER): p_(i) sorted ascending among m tests; adj_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)).
* BH (step-up, FDR at q): adj_(i) = min_{j ≥ i} min(1, m/j·p_(j)); a comparison is a discovery when adj ≤ q.
  Ties get equal adjusted values under both rules (the cumulative max/min make the order among ties irrelevant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from softclip.metric_catalog import alias_of, load_catalog

PRIMARY, SECONDARY, UNCOUNTED = "primary (Holm)", "secondary (BH)", "not counted"
Q = 0.05


def _valid(p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(p, dtype=float)
    return arr, np.flatnonzero(np.isfinite(arr))


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values [m], NaN where ``p`` is NaN."""
    arr, idx = _valid(p)
    out = np.full(arr.shape, math.nan)
    if idx.size:
        order = idx[np.argsort(arr[idx], kind="mergesort")]
        m = order.size
        scaled = np.minimum(1.0, (m - np.arange(m)) * arr[order])
        out[order] = np.maximum.accumulate(scaled)
    return out


def bh(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg-adjusted p-values [m] (q-values), NaN where ``p`` is NaN."""
    arr, idx = _valid(p)
    out = np.full(arr.shape, math.nan)
    if idx.size:
        order = idx[np.argsort(arr[idx], kind="mergesort")]
        m = order.size
        scaled = np.minimum(1.0, m / np.arange(1, m + 1) * arr[order])
        out[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return out


@dataclass(frozen=True)
class Family:
    """An ablation's primary family: (variant, reference) pairs × metric keys, and where it was read from."""

    pairs: tuple[tuple[str, str], ...]
    metrics: tuple[str, ...]
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return len(self.pairs) * len(self.metrics)


Families = Mapping[str, Family]


def family_of(row: Mapping, families: Families) -> str:
    """The family of one comparison row (``ablation, variant, baseline, key, kind``)."""
    if alias_of(str(row["key"])) or load_catalog().is_diagnostic(str(row["key"])):
        return UNCOUNTED  # a metric that coincides with another, or a diagnostic (target precision)
    fam = families.get(str(row["ablation"]))
    is_primary = (fam is not None and row.get("kind", "contrast") == "contrast"
                  and (str(row["variant"]), str(row["baseline"])) in fam.pairs and str(row["key"]) in fam.metrics)  # fmt: skip
    return PRIMARY if is_primary else SECONDARY


def correct(tables: Sequence[pd.DataFrame], families: Families) -> list[pd.DataFrame]:
    """Copies of ``tables`` (each with ``ablation, variant, baseline, key, p`` and optionally ``kind``) with
    ``family`` and ``p_adj``: Holm within each ablation's primary family, BH over every other tested comparison
    of all the tables together; rows without a p keep NaN."""
    out = [t.copy() for t in tables]
    parts = []
    for i, t in enumerate(out):
        t["family"] = [family_of(r, families) if math.isfinite(r["p"]) else "" for r in t.to_dict("records")]
        t["p_adj"] = math.nan
        parts.append(pd.DataFrame({"table": i, "row": t.index, "ablation": t["ablation"].astype(str),
                                   "family": t["family"], "p": t["p"].astype(float)}))  # fmt: skip
    allp = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    adjusted = pd.Series(math.nan, index=allp.index)
    for _, group in allp[allp["family"] == PRIMARY].groupby("ablation"):
        adjusted.loc[group.index] = holm(group["p"])
    rest = allp[allp["family"] == SECONDARY]
    adjusted.loc[rest.index] = bh(rest["p"])
    for i, t in enumerate(out):
        sel = allp["table"] == i
        t.loc[allp.loc[sel, "row"].to_numpy(), "p_adj"] = adjusted[sel].to_numpy()
    return out
