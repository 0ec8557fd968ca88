"""Where each ablation's pre-declared primary family comes from, in this order: the ``primary`` record the runs'
manifest (before manifests, their ``ablation.json``) carries, written by ``softclip ablate`` from the ablation file;
a ``families.json`` saved beside a ``frame.csv`` input; else the ablation file of that name in the ablations folder
(``ablations/<name>.yaml``). The report writes what it used to ``families.json`` and says where each came from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from softclip.ablation_spec import AblationSpec
from softclip.report.multiplicity import Family
from softclip.report.runs import Collection, ReportError


def _family(raw: Any, source: str) -> Family | None:
    """A :class:`Family` from ``{"contrasts": [[variant, reference], ...], "metrics": [...]}``."""
    if not isinstance(raw, dict) or not raw.get("metrics"):
        return None
    pairs = tuple((str(v), str(r)) for v, r in raw.get("contrasts") or [])
    return Family(pairs, tuple(str(m) for m in raw["metrics"]), source)


def from_runs(collection: Collection) -> dict[str, Family]:
    """Families recorded with the runs (``primary`` in their manifest record or ``ablation.json``), first run of
    each ablation wins."""
    out: dict[str, Family] = {}
    for run in collection.runs:
        meta = run.record
        if run.ablation in out or run.meta_source.startswith(("frame:", "layout")) or not meta:
            continue
        if meta.get("ablation") == run.ablation:
            where = "the manifest of its runs" if run.meta_source.startswith("manifest") else "ablation.json of its runs"
            fam = _family(meta.get("primary"), where)
            if fam is not None:
                out[run.ablation] = fam
    return out


def from_saved(inputs: Sequence[str]) -> dict[str, Family]:
    """Families saved beside ``frame.csv`` inputs (``families.json``, as a report writes it)."""
    out: dict[str, Family] = {}
    for name in inputs:
        path = Path(name).with_name("families.json")
        if not (name.endswith(".csv") and path.is_file()):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ReportError(f"{path}: unreadable families file: {err}") from err
        for ablation, raw in (data or {}).items():
            origin = raw.get("source") if isinstance(raw, dict) else None
            fam = _family(raw, f"{origin}, via {path.name}" if origin else f"{path.name} beside {Path(name).name}")
            if fam is not None:
                out.setdefault(str(ablation), fam)
    return out


def from_file(path: Path) -> Family | None:
    """The ``primary`` block of an ablation file (profiles ignored: the family is declared once).

    Raises:
        ReportError: the file's ``primary`` block is invalid (unknown variant or metric).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: unreadable ablation file: {err}") from err
    if not isinstance(data, dict) or data.get("primary") is None:
        return None
    data = {k: v for k, v in data.items() if k != "profiles"}
    try:
        spec = AblationSpec.model_validate({**data, "source": str(path)})
    except ValidationError as err:
        raise ReportError(f"{path}: {err.errors()[0]['msg']}") from None
    assert spec.primary is not None
    return Family(tuple(spec.primary_pairs()), tuple(spec.primary.metrics), f"{path.as_posix()} (read by name)")


def resolve(collection: Collection, ablations: Sequence[str], folder: str | Path | None) -> dict[str, Family]:
    """Each ablation's family (see the module docstring), restricted to the variants the report has; ablations
    without one are absent (all their comparisons go to the BH family)."""
    found = {**from_saved(collection.inputs), **from_runs(collection)}
    variants: dict[str, set[str]] = {}
    for run in collection.runs:
        variants.setdefault(run.ablation, set()).add(run.variant)
    out: dict[str, Family] = {}
    for ablation in ablations:
        fam = found.get(ablation)
        if fam is None and folder is not None and (Path(folder) / f"{ablation}.yaml").is_file():
            fam = from_file(Path(folder) / f"{ablation}.yaml")
        if fam is None:
            continue
        have = variants.get(ablation, set())
        kept = tuple(p for p in fam.pairs if set(p) <= have)
        gone = [f"{v}:{r}" for v, r in fam.pairs if not {v, r} <= have]
        notes = (f"declared contrasts without runs here: {', '.join(gone)}",) if gone else ()
        out[ablation] = Family(kept, fam.metrics, fam.source, notes)
    return out


def to_json(families: dict[str, Family]) -> str:
    """``families.json``: {ablation: {contrasts, metrics, source}} as the report used them."""
    data = {a: {"contrasts": [list(p) for p in f.pairs], "metrics": list(f.metrics),
                "source": f.source.split(", via ")[0]}
            for a, f in sorted(families.items())}  # fmt: skip
    return json.dumps(data, indent=1) + "\n"
