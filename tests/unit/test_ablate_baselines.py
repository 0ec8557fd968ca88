"""Per-variant baselines of an ablation (``compare_within``): resolution, load-time errors, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from softclip.ablate import AblationSpec, ablation_root, dedupe, load_ablation, plan_jobs, write_manifest
from softclip.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CLIP = {"loss.target": "hard", "loss.soft_weight": 0.0, "loss.re_weight": 0.0}
METHODS = {"clip": ("CLIP", CLIP), "ls": ("LS", {"loss.target": "label_smoothing"}), "soft": ("SoftCLIP", {})}


def noise_fields(levels: tuple[float, ...] = (0.0, 0.2, 0.4)) -> dict:
    """A noise.yaml look-alike: methods x noise levels, baseline clip at 0.0."""
    variants, factors = {}, {}
    for level in levels:
        for key, (method, overrides) in METHODS.items():
            name = f"{key}_n{level}"
            variants[name] = {**overrides, "data.synth.noise": level} if level else dict(overrides)
            factors[name] = {"method": method, "noise": level}
    return {"variants": variants, "factors": factors, "baseline": "clip_n0.0", "compare_within": ["noise"]}


def write(tmp_path: Path, name: str = "noise", **fields) -> Path:
    data = {"name": name, "base": str(ROOT / "ablations" / "base.yaml"), "output_dir": str(tmp_path / "runs"),
            "seeds": [0, 1], "overrides": {"eval.suite": str(ROOT / "eval" / "synthetic.yaml")}, **fields}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_baseline_of_compares_within_the_noise_level() -> None:
    spec = AblationSpec.model_validate({"name": "noise", "base": "base.yaml", **noise_fields()})
    got = {v: spec.baseline_of(v) for v in spec.variants}
    assert got == {"clip_n0.0": "clip_n0.0", "ls_n0.0": "clip_n0.0", "soft_n0.0": "clip_n0.0",
                   "clip_n0.2": "clip_n0.2", "ls_n0.2": "clip_n0.2", "soft_n0.2": "clip_n0.2",
                   "clip_n0.4": "clip_n0.4", "ls_n0.4": "clip_n0.4", "soft_n0.4": "clip_n0.4"}  # fmt: skip
    with pytest.raises(KeyError, match="soft_n9"):
        spec.baseline_of("soft_n9")
    plain = AblationSpec.model_validate({"name": "n", "base": "b", **{**noise_fields(), "compare_within": []}})
    assert {plain.baseline_of(v) for v in plain.variants} == {"clip_n0.0"}  # unchanged without compare_within
    bare = AblationSpec.model_validate({"name": "n", "base": "b", "variants": {"a": {}, "b": {}}})
    assert bare.baseline_of("a") is None and bare.compare_within == []


def test_two_factors_within_and_other_factors_from_the_baseline() -> None:
    variants = {f"{m}_{d}_{n}": {} for m in ("clip", "soft") for d in ("x", "y") for n in ("0", "1")}
    factors = {v: dict(zip(("method", "data", "noise"), v.split("_"), strict=True)) for v in variants}
    spec = AblationSpec.model_validate({"name": "g", "base": "b", "variants": variants, "factors": factors,
                                        "baseline": "clip_x_0", "compare_within": ["data", "noise"]})  # fmt: skip
    assert spec.baseline_of("soft_y_1") == "clip_y_1" and spec.baseline_of("clip_y_0") == "clip_y_0"
    spec = AblationSpec.model_validate({"name": "g", "base": "b", "variants": variants, "factors": factors,
                                        "baseline": "clip_x_0", "compare_within": ["noise"]})  # fmt: skip
    assert spec.baseline_of("soft_y_1") == "clip_x_1"  # data is not compared within: the baseline's x


def test_the_committed_noise_ablation_compares_per_level() -> None:
    spec = load_ablation(ROOT / "ablations" / "noise.yaml", "smoke")
    assert spec.compare_within == ["noise"]
    assert spec.baseline_of("softclip_n0.4") == "clip_n0.4" and spec.baseline_of("ls_n0.6") == "clip_n0.6"
    assert spec.baseline_of("softclip_n0.0") == spec.baseline == "clip_n0.0"
    metas = {job.variant: job.meta["baseline"] for job in plan_jobs(spec)}
    assert metas["softclip_n0.2"] == "clip_n0.2" and metas["clip_n0.2"] == "clip_n0.2"


def _without(fields: dict, variant: str, factor: str) -> dict:
    factors = {**fields["factors"], variant: {k: v for k, v in fields["factors"][variant].items() if k != factor}}
    return {**fields, "factors": factors}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: {**f, "baseline": None}, r"compare_within \['noise'\] needs a baseline variant"),
        (lambda f: _without(f, "ls_n0.2", "noise"),
         r"variant 'ls_n0.2' \(method='LS'\) lacks factor\(s\) \['noise'\]"),
        (lambda f: {**f, "variants": {k: v for k, v in f["variants"].items() if k != "clip_n0.2"},
                    "factors": {k: v for k, v in f["factors"].items() if k != "clip_n0.2"}},
         r"variant 'ls_n0.2' \(method='LS', noise=0.2\) needs exactly one baseline variant with "
         r"method='CLIP', noise=0.2; found none"),
        (lambda f: {**f, "variants": {**f["variants"], "clip2_n0.4": CLIP},
                    "factors": {**f["factors"], "clip2_n0.4": {"method": "CLIP", "noise": 0.4}}},
         r"variant 'clip_n0.4' \(method='CLIP', noise=0.4\) .* found \['clip_n0.4', 'clip2_n0.4'\]"),
    ],
)  # fmt: skip
def test_compare_within_errors_name_file_variant_and_factors(tmp_path, change, message) -> None:
    path = write(tmp_path, **change(noise_fields()))
    with pytest.raises(ConfigError, match=message) as err:
        load_ablation(path)
    assert str(err.value).startswith(f"{path}: compare_within")


def test_each_manifest_carries_its_own_baseline_for_a_shared_run(tmp_path) -> None:
    noise = load_ablation(write(tmp_path, **noise_fields((0.0, 0.2))), "smoke")
    main = load_ablation(write(tmp_path, "main", variants={"clip": CLIP, "soft": {}}, baseline="clip"), "smoke")
    unique, shared = dedupe(plan_jobs(main) + plan_jobs(noise))
    pairs = {(a.meta["ablation"], a.variant, c.meta["ablation"], c.variant) for a, c in shared}
    assert pairs == {("noise", "clip_n0.0", "main", "clip"), ("noise", "soft_n0.0", "main", "soft")}
    assert all(a.run_dir == c.run_dir for a, c in shared)  # one run folder, named by identity
    for spec in (main, noise):
        write_manifest(spec, plan_jobs(spec))
    records = {spec.name: {r["variant"]: r for r in json.loads((ablation_root(spec) / "manifest.json").read_text())["runs"]}
               for spec in (main, noise)}  # fmt: skip
    assert records["noise"]["clip_n0.0"]["run_dir"] == records["main"]["clip"]["run_dir"]
    assert records["noise"]["clip_n0.0"]["baseline"] == "clip_n0.0" and records["main"]["clip"]["baseline"] == "clip"
    by_variant = {j.variant: j.meta["baseline"] for j in unique if j.meta["ablation"] == "noise"}
    assert by_variant == {"clip_n0.2": "clip_n0.2", "ls_n0.2": "clip_n0.2", "soft_n0.2": "clip_n0.2",
                          "ls_n0.0": "clip_n0.0"}  # fmt: skip


def test_a_degenerate_variant_is_refused_when_the_grid_is_planned(tmp_path) -> None:
    """A variant whose objective is degenerate (a contrastive batch of one) fails at load, naming the variant,
    before any run of the grid starts (it used to fail only when its own run started)."""
    path = write(tmp_path, name="tiny", variants={"ok": {}, "single": {"data.batch_size": 1}}, baseline="ok")
    with pytest.raises(ConfigError, match=r"variant single.*batch_size"):
        load_ablation(path, profile="smoke")
