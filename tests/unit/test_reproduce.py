"""softclip reproduce: parts, deduplicated shared runs, alias folders, per-spec data roots, ablation.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from softclip import reproduce as rep
from softclip.ablate import (
    ablation_launcher,
    check_data_roots,
    dedupe,
    holds_finished_run,
    is_finished,
    link_alias,
    load_ablation,
    plan_jobs,
    run_planned,
)  # fmt: skip
from softclip.cli import main
from softclip.config import ConfigError
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
        check_data_roots(clash)


def test_shared_runs_become_alias_folders_with_their_own_identity(tmp_path, fake_runs):
    a = load_ablation(write(tmp_path, "a", {"clip": CLIP, "soft": {}}, baseline="clip"), "smoke")
    b = load_ablation(write(tmp_path, "b", {"hard": CLIP, "ls": {"loss.target": "label_smoothing"}},
                            baseline="hard", labels={"hard": "hard (CLIP)"}), "smoke")  # fmt: skip
    unique, aliases = dedupe(plan_jobs(a) + plan_jobs(b))
    assert len(unique) == 6 and len(aliases) == 2
    with ablation_launcher(a, "inprocess") as launcher:
        result = run_planned(launcher, unique)
    assert len(result.outcomes) == 6 and not result.failed
    for alias, canonical in aliases:
        link_alias(alias, canonical)
        here = Path(alias.run_dir)
        assert (here / "config.yaml").is_symlink() and (here / "eval").resolve() == Path(canonical.run_dir, "eval")
        meta = json.loads((here / "ablation.json").read_text())
        assert meta["ablation"] == "b" and meta["variant"] == "hard" and meta["label"] == "hard (CLIP)"
        assert meta["alias_of"] == canonical.run_dir and meta["baseline"] == "hard"
        assert is_finished(here, alias.suite, alias.config)
        link_alias(alias, canonical)  # idempotent on a re-run
    Path(unique[0].run_dir, "x").mkdir()
    with pytest.raises(FileExistsError, match="not an alias folder"):
        link_alias(type(unique[0])(**{**aliases[0][0].__dict__, "run_dir": unique[0].run_dir}), unique[1])


def test_a_part_run_alone_first_is_reused_not_linked_over(tmp_path, fake_runs):
    a = load_ablation(write(tmp_path, "a", {"clip": CLIP, "soft": {}}, baseline="clip"), "smoke")
    b = load_ablation(write(tmp_path, "b", {"hard": CLIP, "ls": {"loss.target": "label_smoothing"}},
                            baseline="hard"), "smoke")  # fmt: skip
    with ablation_launcher(b, "inprocess") as launcher:
        run_planned(launcher, plan_jobs(b))  # b alone: its hard runs are real folders
    first = [(j.variant, j.seed) for j in plan_jobs(a) + plan_jobs(b)]
    unique, aliases = dedupe(plan_jobs(a) + plan_jobs(b), holds_run=holds_finished_run)
    assert [(j.variant, j.seed) for j in unique] == [("soft", 0), ("soft", 1), ("hard", 0), ("hard", 1),
                                                      ("ls", 0), ("ls", 1)]  # fmt: skip
    assert [(x.variant, c.variant, c.seed) for x, c in aliases] == [("clip", "hard", 0), ("clip", "hard", 1)]
    assert first[:2] == [("clip", 0), ("clip", 1)]  # plan order kept: a's CLIP comes first, b's run is reused
    with ablation_launcher(a, "inprocess") as launcher:
        result = run_planned(launcher, unique)
    assert len(result.skipped) == 4 and len(result.outcomes) == 2
    for alias, canonical in aliases:
        link_alias(alias, canonical)
        assert is_finished(alias.run_dir, alias.suite, alias.config)
    # both parts run alone first: each holds real runs of the same config, and neither is linked over
    (tmp_path / "x").mkdir()
    a2 = load_ablation(write(tmp_path / "x", "a", {"clip": CLIP}, baseline="clip"), "smoke")
    b2 = load_ablation(write(tmp_path / "x", "b", {"hard": CLIP}, baseline="hard"), "smoke")
    for spec in (a2, b2):
        with ablation_launcher(spec, "inprocess") as launcher:
            run_planned(launcher, plan_jobs(spec))
    unique, aliases = dedupe(plan_jobs(a2) + plan_jobs(b2), holds_run=holds_finished_run)
    assert len(unique) == 4 and not aliases
    assert len(dedupe(plan_jobs(a2) + plan_jobs(b2))[1]) == 2  # without the check they would be linked over


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
