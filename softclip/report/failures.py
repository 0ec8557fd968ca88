"""Failed, diverged, missing and unfinished seeds per variant, so that none drops out of a row silently.

A seed of a variant is *failed* when its run has no results (no metric at all) or a non-finite value of any
metric (a diverged run), *unfinished* when its run folder has no ``done.json`` (still training, or killed), and
*missing* when the ablation declares it (``seeds`` in the runs' ``ablation.json``) or another variant of the
ablation has it, but this variant has no run for it.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from softclip import runfiles
from softclip.report.runs import Collection

COLUMNS = ["ablation", "variant", "expected", "ok", "failed", "unfinished", "missing", "detail"]


def declared_seeds(collection: Collection) -> dict[str, set[int]]:
    """Seeds each ablation declares, from the ``seeds`` its runs' records (manifest or ``ablation.json``) (when it does)."""
    out: dict[str, set[int]] = {}
    for run in collection.runs:
        if run.ablation in out or run.meta_source.startswith(("frame:", "layout")):
            continue
        seeds = run.record.get("seeds")
        if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
            out[run.ablation] = set(seeds)
    return out


def seed_status(collection: Collection) -> pd.DataFrame:
    """Per (ablation, variant): expected seeds, how many are fine, and the failed/unfinished/missing ones."""
    declared = declared_seeds(collection)
    per_variant: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    seen: dict[str, set[int]] = defaultdict(set)
    for run in collection.runs:
        values = [v for m in run.results.values() for v in m.values()]
        if not values:
            why = "no results"
        elif not all(math.isfinite(v) for v in values):
            why = "non-finite metrics"
        elif not run.meta_source.startswith("frame:") and not (run.path / runfiles.DONE).is_file():
            why = "unfinished (no done.json)"
        else:
            why = ""
        per_variant[(run.ablation, run.variant)][run.seed] = why
        seen[run.ablation].add(run.seed)
    rows = []
    for (ablation, variant), seeds in per_variant.items():
        expected = declared.get(ablation, set()) | seen[ablation]
        missing = sorted(expected - set(seeds))
        bad = {s: why for s, why in sorted(seeds.items()) if why}
        detail = [f"s{s}: {why}" for s, why in bad.items()] + [f"s{s}: missing" for s in missing]
        rows.append({"ablation": ablation, "variant": variant, "expected": len(expected),
                     "ok": sum(1 for why in seeds.values() if not why),
                     "failed": sum(1 for why in bad.values() if not why.startswith("unfinished")),
                     "unfinished": sum(1 for why in bad.values() if why.startswith("unfinished")),
                     "missing": len(missing), "detail": "; ".join(detail)})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def flag(status: pd.DataFrame, ablation: str, variant: str) -> str:
    """A row's short flag: "" when every expected seed is fine, else e.g. "2 of 5 seeds lack results"."""
    hit = status[(status["ablation"] == ablation) & (status["variant"] == variant)]
    if hit.empty:
        return ""
    r = hit.iloc[0]
    bad = int(r["failed"] + r["unfinished"] + r["missing"])
    return f"{bad} of {int(r['expected'])} seeds without usable results ({r['detail']})" if bad else ""
