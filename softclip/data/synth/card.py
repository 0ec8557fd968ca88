"""The dataset card: every knob, counts, and statistics that say how hard the benchmark is (JSON + Markdown).

The card holds no timings or host names, so it is byte-identical for the same spec and seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from softclip.data.synth.captions import Caption, describes_matrix
from softclip.data.synth.scenes import Obj
from softclip.data.synth.spec import SIZES, SynthConfig

VERSION = "1.0.0"  # bump whenever the bytes written for a given spec and seed change
BATCH = 128
MAX_FN_SAMPLE = 2048


def region_stats(n_regions: Sequence[int], n_true: Sequence[int]) -> dict[str, Any]:
    """Regions per image: mean, std, min, max, zero-region fraction, histogram, share of true regions."""
    k = np.asarray(n_regions, dtype=np.int64)
    hist = np.bincount(k) if k.size else np.zeros(0, dtype=np.int64)
    total = int(k.sum())
    return {
        "mean": round(float(k.mean()), 4) if k.size else 0.0,
        "std": round(float(k.std()), 4) if k.size else 0.0,
        "min": int(k.min()) if k.size else 0,
        "max": int(k.max()) if k.size else 0,
        "zero_region_fraction": round(float((k == 0).mean()), 6) if k.size else 0.0,
        "histogram": {str(i): int(c) for i, c in enumerate(hist)},
        "true_region_fraction": round(sum(n_true) / total, 6) if total else 0.0,
    }


def false_negative_stats(captions: Sequence[Caption], scenes: Sequence[Sequence[Obj]],
                         rng: np.random.Generator, batch: int = BATCH) -> dict[str, Any]:
    """Estimate in-batch false negatives from a sample of up to ``MAX_FN_SAMPLE`` training pairs.

    ``expected_per_batch``: expected number of the other ``batch - 1`` captions in a random batch that truly
    describe the anchor image (the same expectation holds for other images described by the anchor caption).
    ``anchors_with_any``: probability that an anchor image has at least one such caption in its batch.
    """
    n = len(captions)
    m = min(n, MAX_FN_SAMPLE)
    if m < 2:
        return {"batch_size": batch, "sampled_pairs": 0, "pair_probability": 0.0, "expected_per_batch": 0.0,
                "anchors_with_any": 0.0}
    idx = np.sort(rng.choice(n, size=m, replace=False))
    hits = describes_matrix([captions[i] for i in idx], [scenes[i] for i in idx])  # [C, I]
    np.fill_diagonal(hits, False)
    p_image = hits.sum(0) / (m - 1)  # per anchor image: chance that another caption describes it
    p_pair = float(hits.sum()) / (m * (m - 1))
    return {
        "batch_size": batch,
        "sampled_pairs": m * (m - 1),
        "pair_probability": round(p_pair, 6),
        "expected_per_batch": round(p_pair * (batch - 1), 4),
        "anchors_with_any": round(float(np.mean(1 - (1 - p_image) ** (batch - 1))), 4),
    }


def disk_usage(root: Path, folders: Sequence[str]) -> dict[str, dict[str, int]]:
    """Files and bytes under each of ``folders`` in ``root``."""
    out = {}
    for folder in folders:
        files = [Path(d) / f for d, _, fs in os.walk(root / folder) for f in fs]
        out[folder] = {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
    return out


def build_card(spec: SynthConfig, seed: int, summaries: dict[str, dict[str, Any]],
               disk: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The card as a JSON-able dict (key order fixed)."""
    fn = summaries.get("train", {}).get("false_negatives", {})
    regions = summaries.get("train", {}).get("regions", {})
    return {
        "generator": "softclip.data.synth (SynthScenes)",
        "version": VERSION,
        "seed": seed,
        "spec": spec.model_dump(mode="json"),
        "vocabulary": {"shapes": list(spec.shapes), "colours": list(spec.colours), "sizes": list(SIZES)},
        "object_types": spec.n_object_types,
        "object_types_with_size": spec.n_object_types * len(SIZES),
        "expected_false_negatives_per_batch": fn.get("expected_per_batch"),
        "zero_region_fraction": regions.get("zero_region_fraction"),
        "sets": summaries,
        "disk": disk,
    }


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| key | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and k != "histogram":
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def render_readme(card: dict[str, Any]) -> str:
    """The card for humans (Markdown)."""
    lines = [
        f"# SynthScenes (generator {card['version']}, seed {card['seed']})", "",
        "Procedurally drawn scenes of coloured shapes with many-to-many captions and a simulated detector, "
        "written in the formats of the real datasets (img2dataset webdataset shards, ImageFolder, Karpathy "
        "JSON, revisitop, Copydays). Regenerate with `softclip data synth` and the spec below.", "",
        f"- object types (colour x shape): **{card['object_types']}** "
        f"({card['object_types_with_size']} with size)",
        f"- shapes: {', '.join(card['vocabulary']['shapes'])}",
        f"- colours: {', '.join(card['vocabulary']['colours'])}",
        f"- expected other captions in a batch of {BATCH} that truly describe the anchor image: "
        f"**{card['expected_false_negatives_per_batch']}**",
        f"- images without any detector region: {card['zero_region_fraction']}", "",
        "## Sets", "",
    ]
    for name, summary in card["sets"].items():
        lines += [f"### {name}", "", *_table(_flatten(summary)), ""]
    lines += ["## Disk", "", "| folder | files | bytes |", "|---|---|---|"]
    lines += [f"| {k} | {v['files']} | {v['bytes']} |" for k, v in card["disk"].items()]
    lines += ["", "## Spec", "", *_table(_flatten(card["spec"])), ""]
    return "\n".join(lines)
