"""Hand-made run folders with known numbers (config.yaml, eval/*.json, ablation.json, metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

BENCH_METRICS = {
    "zeroshot": ["top1", "top5", "shape_acc"],
    "retrieval": ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "i2t_mean_rank",
                  "val_nce_loss"],
    "instance": ["map_medium", "map_hard"],
    "copydays": ["map_strong"],
}  # fmt: skip


def base_config(name: str, seed: int, **loss: Any) -> dict[str, Any]:
    """A small resolved-config look-alike."""
    return {
        "name": name, "seed": seed, "output_dir": "runs",
        "model": {"name": "tiny-vit"},
        "data": {"synth": {"noise": 0.0, "detector": {"seed": seed, "feature_noise": 0.3}}},
        "roi": {"aggregation": "mean"},
        "loss": {"target": "selfsim", "beta": 0.3, "tau": 0.07, "soft_weight": 1.0, "re_weight": 0.5, **loss},
        "train": {"steps": 30},
    }  # fmt: skip


def make_run(
    folder: Path, *, seed: int, results: dict[str, dict[str, float]], config: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None, curve: list[dict[str, Any]] | None = None, done: bool = True,
) -> Path:  # fmt: skip
    """Write one run folder (with ``done.json`` unless ``done`` is False) and return it."""
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    if done:
        (folder / "done.json").write_text(json.dumps({"step": 30}))
    cfg = config or base_config(folder.name, seed)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for bench, metrics in results.items():
        doc = {"run": cfg["name"], "benchmark": bench, "task": bench, "protocol": {}, "metrics": metrics,
               "config_hash": "x", "git_sha": "y", "n_items": 10, "time_s": 0.1, "suite": "synthetic"}  # fmt: skip
        (folder / "eval" / f"{bench}.json").write_text(json.dumps(doc))
    if meta is not None:
        (folder / "ablation.json").write_text(json.dumps(meta))
    if curve is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return folder


def value(ablation: int, variant: int, seed: int, metric: str) -> float:
    """A deterministic, metric-specific fake value."""
    base = 20.0 + 7.0 * variant + 3.0 * ablation + (seed * 1.7) % 2.3 + len(metric) * 0.5
    base += 0.6 * ((seed * (variant + 2)) % 3)  # seed x variant interaction: paired differences vary
    return base / 10 if ("loss" in metric or "rank" in metric) else base


def make_grid(root: Path, n_ablations: int = 2, n_variants: int = 3, seeds: tuple[int, ...] = (0, 1, 2),
              curves: bool = True) -> list[Path]:  # fmt: skip
    """``root/<ablation>/<variant>/s<seed>`` with ablation.json (baseline = variant v0, factors noise/method)."""
    made = []
    for a in range(n_ablations):
        for v in range(n_variants):
            for s in seeds:
                results = {b: {m: value(a, v, s, m) for m in ms} for b, ms in BENCH_METRICS.items()}
                meta = {"ablation": f"abl{a}", "variant": f"v{v}", "label": f"variant {v}", "seed": s,
                        "profile": "quick", "baseline": "v0", "order": v,
                        "factors": {"method": "CLIP" if v == 0 else "SoftCLIP", "noise": 0.1 * (v % 2) + 0.1 * a},
                        "description": "fake"}  # fmt: skip
                curve = ([{"kind": "train", "step": st, "loss": 5.0 - st / 100 + v, "nce_loss": 3.0}
                          for st in (10, 20, 30)] + [{"kind": "eval", "step": 30, "zeroshot/top1": 20.0 + v}]
                         if curves else None)  # fmt: skip
                made.append(make_run(root / f"abl{a}" / f"v{v}" / f"s{s}", seed=s, results=results,
                                     config=base_config(f"abl{a}-v{v}-s{s}", s), meta=meta, curve=curve))  # fmt: skip
    return made
