"""softclip reproduce: parts, shared runs trained once, manifests, per-spec data roots, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from softclip import reproduce as rep
from softclip.ablate import (
    ablation_root,
    dedupe,
    load_ablation,
    plan_jobs,
    run_ablation,
)  # fmt: skip
from softclip.cli import main
from softclip.config import ConfigError
from softclip.data.synth.roots import check_roots
from softclip.train.rundir import is_finished
from tests.unit.launch import fakes

ROOT = Path(__file__).resolve().parents[2]
SUITE = str(ROOT / "eval" / "synthetic.yaml")


def write(tmp_path: Path, name: str, variants: dict, **fields) -> Path:
    data = {"name": name, "base": str(ROOT / "ablations" / "base.yaml"), "output_dir": str(tmp_path / "runs"),
            "variants": variants, "seeds": [0, 1], "overrides": {"eval.suite": SUITE}, **fields}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


CLIP = {"loss.target": "hard", "loss.soft_weight": 0.0, "loss.re_weight": 0.0}


def test_every_part_file_loads_in_every_profile_and_opens_with_its_header():
    for profile in ("smoke", "quick", "paper"):
        specs, sweeps = rep.plan(profile, rep.select_parts(None))
        assert [s.name for s in specs] == list(rep.ABLATIONS) and [s.name for s in sweeps] == ["beta_tau"]
        for spec in specs:
            jobs = plan_jobs(spec)
            assert spec.baseline in spec.variants
            assert len({j.variant for j in jobs}) == len(spec.variants)
            if profile == "quick":
                assert len(spec.seeds) >= 5, spec.name
    for name in rep.ABLATIONS:
        head = (ROOT / "ablations" / f"{name}.yaml").read_text().splitlines()[:12]
        assert head[0].startswith(f"# {name}.yaml") and any("Run:" in line for line in head)
        assert any("Runtime:" in line for line in head) and any("Reproduces:" in line for line in head)


def test_quick_demo_trains_each_distinct_run_once():
    specs, _ = rep.plan("quick", ["main", "targets"])
    jobs = [j for s in specs for j in plan_jobs(s)]
    unique, aliases = dedupe(jobs)
    assert (len(jobs), len(unique)) == (35, 25)  # targets' oracle variant: 5 more
    pairs = {(a.meta["ablation"], a.variant, c.meta["ablation"], c.variant) for a, c in aliases}
    assert pairs == {("targets", "hard", "main", "clip"), ("targets", "selfsim_roi", "main", "softclip")}
    assert all(a.seed == c.seed for a, c in aliases)
    specs, _ = rep.plan("quick", ["main", "targets"], exclude=["targets.selfsim_raw"])  # make demo's plan
    targets = next(s for s in specs if s.name == "targets")
    assert list(targets.variants) == ["hard", "label_smoothing", "selfsim_roi", "oracle"]
    assert "selfsim_raw" not in targets.labels
    assert len(dedupe([j for s in specs for j in plan_jobs(s)])[0]) == 20


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        (["targets.selfsim_rw"], r"targets.yaml.*exclude names unknown variants \['selfsim_rw'\]"),
        (["noise.clip"], r"--exclude 'noise.clip': expected <ablation>.<variant> with an ablation of this run \(main, targets\)"),
        (["targets"], r"--exclude 'targets'"),
    ],
)  # fmt: skip
def test_exclude_names_a_variant_of_an_ablation_being_run(exclude, message):
    with pytest.raises(ConfigError, match=message):
        rep.plan("quick", ["main", "targets"], exclude=exclude)


def test_unknown_part_and_unknown_baseline_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown part.*'mian'.*main, calibration, targets"):
        rep.select_parts(["mian"])
    assert rep.select_parts(["targets", "main"]) == ["main", "targets"]  # report order, not argument order
    with pytest.raises(ConfigError, match="baseline names unknown variants"):
        load_ablation(write(tmp_path, "a", {"clip": CLIP}, baseline="clpi"))
    assert main(["reproduce", "--profile", "smoke", "--only", "nope"]) == 2


def test_variants_changing_synth_data_get_their_own_root(tmp_path):
    spec = load_ablation(write(tmp_path, "noise", {"clean": {}, "n2": {"data.synth.noise": 0.2},
                                                   "n2_clip": {"data.synth.noise": 0.2, **CLIP}}), "smoke")
    roots = {j.variant: j.config["data"]["root"] for j in plan_jobs(spec)}
    assert roots["clean"] == "data/synth-smoke" and roots["n2"].startswith("data/synth-smoke-")
    assert roots["n2"] == roots["n2_clip"] != roots["clean"]
    jobs = plan_jobs(spec)
    clash = [jobs[0], type(jobs[0])(**{**jobs[2].__dict__, "config": {**jobs[2].config, "data": {
        **jobs[2].config["data"], "root": jobs[0].config["data"]["root"]}}})]  # fmt: skip
    with pytest.raises(ConfigError, match="different SynthScenes data into the same data.root"):
        check_roots([(j.variant, j.config["data"]) for j in clash])


def test_a_run_shared_by_two_ablations_trains_once_and_both_manifests_point_at_it(tmp_path, fake_runs):
    from softclip.report.discover import load_runs

    a = load_ablation(write(tmp_path, "a", {"clip": CLIP, "soft": {}}, baseline="clip"), "smoke")
    b = load_ablation(write(tmp_path, "b", {"hard": CLIP, "ls": {"loss.target": "label_smoothing"}},
                            baseline="hard", labels={"hard": "hard (CLIP)"}), "smoke")  # fmt: skip
    unique, shared = dedupe(plan_jobs(a) + plan_jobs(b))
    assert len(unique) == 6 and len(shared) == 2
    first = run_ablation(a, launcher="inprocess")
    assert len(first.outcomes) == 4 and not first.failed
    second = run_ablation(b, launcher="inprocess")  # b's CLIP runs are a's: finished, not trained again
    assert len(second.skipped) == 2 and len(second.outcomes) == 2 and not second.failed
    manifests = {s.name: json.loads((ablation_root(s) / "manifest.json").read_text()) for s in (a, b)}
    runs = {name: {(r["variant"], r["seed"]): r for r in m["runs"]} for name, m in manifests.items()}
    assert runs["a"][("clip", 0)]["run_dir"] == runs["b"][("hard", 0)]["run_dir"]
    assert runs["b"][("hard", 0)]["label"] == "hard (CLIP)" and runs["b"][("hard", 0)]["baseline"] == "hard"
    assert not list(Path(tmp_path, "runs").rglob("ablation.json")) and not any(
        p.is_symlink() for p in Path(tmp_path, "runs").rglob("*"))  # fmt: skip
    collection = load_runs([tmp_path / "runs"])  # the report reads the manifests: the shared run in both
    rows = sorted((r.ablation, r.variant, r.seed, r.label) for r in collection.runs)
    assert rows == sorted([("a", "clip", 0, "clip"), ("a", "clip", 1, "clip"), ("a", "soft", 0, "soft"),
                           ("a", "soft", 1, "soft"), ("b", "hard", 0, "hard (CLIP)"), ("b", "hard", 1, "hard (CLIP)"),
                           ("b", "ls", 0, "ls"), ("b", "ls", 1, "ls")])  # fmt: skip


def test_changed_config_is_not_finished(tmp_path):
    spec = load_ablation(write(tmp_path, "a", {"clip": CLIP}), "smoke")
    job = plan_jobs(spec)[0]
    fakes.ablation_job(job)
    assert is_finished(job.run_dir, job.suite, job.config)
    changed = {**job.config, "loss": {**job.config["loss"], "beta": 0.9}}
    assert not is_finished(job.run_dir, job.suite, changed)
    moved = {**job.config, "name": "elsewhere", "output_dir": "/else"}
    assert is_finished(job.run_dir, job.suite, moved)  # where a run lives is not what it is


def test_cluster_flag_reaches_every_ablation_and_sweep(tmp_path):
    from softclip.reproduce import plan

    cluster = tmp_path / "site.yaml"
    cluster.write_text("partition: gpu\ngpus_per_node: 1\n")
    ablations, sweeps = plan("smoke", ["main", "noise", "beta_tau"], cluster=cluster)
    assert [s.launcher.cluster for s in [*ablations, *sweeps]] == [str(cluster)] * 3


def test_prepare_generates_each_synth_root_once(monkeypatch):
    from softclip.data.synth import roots
    from softclip.schema import DataConfig

    made = []
    monkeypatch.setattr(roots, "ensure", lambda data, workers=1: made.append(data.root))
    a, b = DataConfig(root="data/a"), DataConfig(root="data/b")
    files = DataConfig(source="wds", root="data/real")
    assert roots.prepare([a, b, a, files]) == ["data/a", "data/b"]
    assert made == ["data/a", "data/b"]
