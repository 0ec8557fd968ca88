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


def test_the_rehearsals_runs_are_the_papers_cc3m_runs_on_rehearsal_sizes():
    """main.yaml's rehearsal trains the paper's CC3M variants (RN50 and ViT-B-32, CLIP and SoftCLIP), each resolving
    to its paper run except the allowed keys; the CC12M runs are left out (one rehearsal training set)."""
    from softclip.ablate import load_ablation, plan_jobs

    path = ROOT / "ablations" / "main.yaml"
    paper = {job.variant: flatten(job.config) for job in plan_jobs(load_ablation(path, "paper"))}
    rehearsal = {job.variant: flatten(job.config) for job in plan_jobs(load_ablation(path, "rehearsal"))}
    assert set(rehearsal) == {"clip", "softclip", "clip_vitb32", "softclip_vitb32"} == set(paper) - {
        "clip_cc12m", "softclip_cc12m"}  # fmt: skip
    for variant, config in rehearsal.items():
        differ = {k for k in paper[variant] if paper[variant][k] != config.get(k)} - {"name", "output_dir"}
        assert differ <= ALLOWED, (variant, sorted(differ - ALLOWED))
    assert {rehearsal[v]["model.name"] for v in rehearsal} == {"RN50", "ViT-B-32"}
    assert rehearsal["softclip_vitb32"]["roi.aggregation"] == "mhsa" == rehearsal["softclip"]["roi.aggregation"]


def test_reproduce_runs_only_the_main_table_in_the_rehearsal_profile():
    from softclip.reproduce import PARTS, select_parts

    assert select_parts(None, "rehearsal") == ["main"]
    assert select_parts(None, "paper") == list(PARTS)
    assert select_parts(["main", "targets"], "rehearsal") == ["main", "targets"]  # --only still chooses
