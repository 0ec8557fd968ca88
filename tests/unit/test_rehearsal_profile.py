"""The ``rehearsal`` profile is the ``paper`` profile except data roots, steps, batch and set sizes, so what a
rehearsal proves (RN50 / ViT-B-32 at 224 px, MHSA over 50 regions, the paper suite) holds for ``paper``."""

from __future__ import annotations

from pathlib import Path

from softclip.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "profile",  # the profile's own name
    "data.root", "data.train",  # data roots
    "train.steps", "train.ckpt_every", "train.eval_every", "optim.warmup_steps",  # steps
    "data.batch_size",  # batch
    "data.epoch_samples",  # set sizes
}  # fmt: skip


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def test_rehearsal_differs_from_paper_only_in_the_allowed_keys():
    base = str(ROOT / "ablations" / "base.yaml")
    paper = flatten(load_config(base, profile="paper").to_dict())
    rehearsal = flatten(load_config(base, profile="rehearsal").to_dict())
    assert set(paper) == set(rehearsal)
    differ = {k for k in paper if paper[k] != rehearsal[k]}
    assert differ <= ALLOWED, sorted(differ - ALLOWED)
    assert {"data.root", "train.steps", "data.batch_size"} <= differ  # it is a rehearsal, not the paper run
    assert rehearsal["data.kmax"] == 50 and rehearsal["roi.aggregation"] == "mhsa"
    assert rehearsal["model.name"] == "RN50" and rehearsal["eval.suite"] == "eval/paper.yaml"
