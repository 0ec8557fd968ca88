"""Sweep YAML schema, error messages, search-space sampling and conditional parameters (no training)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from softclip.config import ConfigError
from softclip.sweep import SAMPLERS, load_sweep
from softclip.sweep.driver import target_trials
from softclip.sweep.space import grid_space, ordered_params, suggest
from softclip.sweep.study import make_sampler
from softclip.sweep_spec import ParamSpec

ROOT = Path(__file__).resolve().parents[2]
BASE = str(ROOT / "ablations" / "base.yaml")


def write(tmp_path: Path, **fields) -> Path:
    data = {"name": "t", "base": BASE, "space": {"loss.beta": {"type": "float", "low": 0.0, "high": 0.9}},
            "objective": {"metric": "synth/score"}, "n_trials": 3, **fields}  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("profile", [None, "smoke", "quick"])
def test_every_sweep_file_validates(path, profile):
    spec = load_sweep(path, profile)
    assert target_trials(spec) >= 1
    assert path.read_text().startswith("#"), "sweep files open with a comment (what, command, runtime)"


def test_beta_tau_is_the_4x4_grid():
    spec = load_sweep(ROOT / "sweeps" / "beta_tau.yaml")
    assert grid_space(spec.space) == {"loss.beta": [0.1, 0.3, 0.5, 0.7], "loss.tau": [0.03, 0.07, 0.1, 0.15]}
    assert target_trials(spec) == 16


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sampler": {"nmae": "tpe"}}, r"unknown key 'sampler.nmae'; did you mean 'sampler.name'"),
        ({"objectiv": {"metric": "x"}}, r"unknown key 'objectiv'"),
        ({"space": {"loss.beta": {"type": "float", "low": 0.1}}}, r"space.loss.beta: .*needs both 'low' and 'high'"),
        ({"space": {"loss.tau": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, r"log scale needs low > 0"),
        ({"space": {"loss.beta": {"type": "categorical", "choices": [0.1], "low": 0}}}, r"categorical takes"),
        ({"space": {"loss.bta": {"type": "float", "low": 0.1, "high": 0.2}}}, r"unknown key 'loss.bta'; did you mean 'loss.beta'"),
        ({"space": {"loss.beta": {"type": "float", "low": 0.1, "high": 1.5}}}, r"space.loss.beta: value 1.5 .*loss.beta"),
        ({"space": {"roi.aggregation": {"type": "categorical", "choices": ["mean", "avg"]}}}, r"roi.aggregation.*avg"),
        ({"space": {"roi.layers": {"type": "int", "low": 1, "high": 2, "when": {"roi.aggregation": "mhsa"}}}},
         r"space.roi.layers.when: 'roi.aggregation' is not a searched parameter"),
        ({"objective": [{"metric": "a"}, {"metric": "b"}], "pruner": {"name": "median"}}, r"multi-objective"),
        ({"overrides": {"train.stepz": 3}}, r"unknown key 'train.stepz'; did you mean 'train.steps'"),
        ({"sampler": {"name": "tpee"}}, r"did you mean 'tpe'"),
        ({"seeds": [0, 0]}, r"seeds=\[0, 0\] needs at least one seed, without repeats"),  # one run folder per seed
        ({"objective": []}, r"objective"),
        ({"sampler": {"name": "cmaes"}, "objective": [{"metric": "a"}, {"metric": "b"}]}, r"cmaes.*single-objective"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_key(tmp_path, fields, message):
    path = write(tmp_path, **fields)
    with pytest.raises(ConfigError, match=message):
        spec = load_sweep(path)
        make_sampler(spec)


def test_missing_required_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": BASE, "space": {}}))
    with pytest.raises(ConfigError, match="objective: required key is missing"):
        load_sweep(path)


def test_profile_overlays_the_sweep_and_the_base(tmp_path):
    path = write(tmp_path, profiles={"smoke": {"n_trials": 9, "overrides": {"train.steps": 7}}})
    spec = load_sweep(path, "smoke")
    assert spec.n_trials == 9 and spec.overrides == {"train.steps": 7}
    assert load_sweep(path, "quick").n_trials == 3  # the file has no quick profile: unchanged


SPACE = {
    "roi.aggregation": ParamSpec(type="categorical", choices=["mean", "mhsa"]),
    "roi.layers": ParamSpec(type="int", low=1, high=3, when={"roi.aggregation": "mhsa"}),
    "roi.heads": ParamSpec(type="categorical", choices=[2, 4], when={"roi.layers": [2, 3]}),
    "loss.tau": ParamSpec(type="float", low=0.01, high=0.5, log=True),
    "loss.beta": ParamSpec(type="float", low=0.0, high=0.8, step=0.2),
}


def test_parents_are_sampled_before_children():
    order = ordered_params(dict(reversed(list(SPACE.items()))))
    assert order.index("roi.aggregation") < order.index("roi.layers") < order.index("roi.heads")


def test_conditional_cycle_is_an_error():
    space = {"a.x": ParamSpec(type="categorical", choices=[1], when={"a.y": 1}),
             "a.y": ParamSpec(type="categorical", choices=[1], when={"a.x": 1})}  # fmt: skip
    with pytest.raises(ConfigError, match="cycle"):
        ordered_params(space)


def test_sampling_respects_bounds_and_conditions():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_mhsa = seen_mean = 0
    for _ in range(60):
        trial = study.ask()
        params = suggest(trial, SPACE)
        assert 0.01 <= params["loss.tau"] <= 0.5
        assert min(abs(params["loss.beta"] - v) for v in (0.0, 0.2, 0.4, 0.6, 0.8)) < 1e-9
        if params["roi.aggregation"] == "mhsa":
            seen_mhsa += 1
            assert 1 <= params["roi.layers"] <= 3
            assert ("roi.heads" in params) == (params["roi.layers"] >= 2)
        else:
            seen_mean += 1
            assert "roi.layers" not in params and "roi.heads" not in params
        study.tell(trial, 0.0)
    assert seen_mhsa and seen_mean


def test_grid_refuses_conditional_and_stepless_floats():
    with pytest.raises(ConfigError, match="conditional"):
        grid_space(SPACE)
    with pytest.raises(ConfigError, match="'step'"):
        grid_space({"loss.tau": ParamSpec(type="float", low=0.1, high=0.2)})
    assert grid_space({"loss.beta": SPACE["loss.beta"]})["loss.beta"] == [0.0, 0.2, 0.4, 0.6, 0.8]


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_builds_and_samples(tmp_path, name):
    space = {"loss.beta": {"type": "float", "low": 0.0, "high": 0.8, "step": 0.4},
             "roi.aggregation": {"type": "categorical", "choices": ["mean", "max"]}}  # fmt: skip
    spec = load_sweep(write(tmp_path, space=space, sampler={"name": name, "seed": 1}))
    study = optuna.create_study(sampler=make_sampler(spec))
    for i in range(4):
        trial = study.ask()
        params = suggest(trial, spec.space)
        assert params["roi.aggregation"] in ("mean", "max") and params["loss.beta"] in (0.0, 0.4, 0.8)
        study.tell(trial, float(i))


def test_pruning_is_refused_for_multi_task_jobs(tmp_path):
    from softclip.config import LauncherConfig
    from softclip.sweep.driver import make_sweep_launcher

    cluster = tmp_path / "c.yaml"
    cluster.write_text("nodes: 2\ntasks_per_node: 4\ngpus_per_node: 4\n")
    spec = load_sweep(write(tmp_path, pruner={"name": "median"}))
    with pytest.raises(ConfigError, match="needs single-task jobs"):
        make_sweep_launcher(spec, "slurm", None, LauncherConfig(cluster=str(cluster)))


def test_storage_urls_are_redacted_and_mapped_to_dashboard_commands():
    from softclip.sweep.study import dashboard_command, redact_url

    assert redact_url("postgresql://me:s3cr%40t@db.example:5432/sweeps") == "postgresql://me:***@db.example:5432/sweeps"
    assert redact_url("postgresql://me@db/sweeps") == "postgresql://me@db/sweeps"
    assert dashboard_command("sqlite:///runs/s/study.db") == ["optuna-dashboard", "sqlite:///runs/s/study.db"]
    assert dashboard_command("journal:runs/s/study.log") == ["optuna-dashboard", "runs/s/study.log"]
    assert dashboard_command("postgresql://me:pw@db/s")[1].endswith("://me:***@db/s")


def test_cluster_flag_replaces_the_files_cluster(tmp_path, capsys):
    from softclip.cli import main
    from softclip.config import LauncherConfig, with_cluster
    from softclip.sweep.driver import make_sweep_launcher

    cluster = tmp_path / "c.yaml"
    cluster.write_text(f"executor: local\nfolder: {tmp_path / 'submitit'}\ntimeout_min: 7\n")
    spec = load_sweep(write(tmp_path, launcher={"cluster": "clusters/example.yaml"}))
    chosen = with_cluster(spec, cluster)
    assert chosen.launcher.cluster == str(cluster) and spec.launcher.cluster == "clusters/example.yaml"
    launcher = make_sweep_launcher(chosen, "submitit-local", None, LauncherConfig())
    assert launcher.cluster.timeout_min == 7 and launcher.folder == tmp_path / "submitit" / chosen.name
    with pytest.raises(ConfigError, match="nope.yaml"):
        with_cluster(spec, tmp_path / "nope.yaml")
    assert main(["sweep", str(write(tmp_path)), "--cluster", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_workers_share_the_grid_order_and_shift_random_seeds(tmp_path):
    """Grid trial k takes the k-th point of the seeded shuffle: every worker (and a resumed sweep) must shuffle
    alike, while random samplers must not replay each other's points."""
    space = {"loss.beta": {"type": "categorical", "choices": [0.1, 0.3, 0.5]},
             "loss.tau": {"type": "categorical", "choices": [0.03, 0.07]}}  # fmt: skip
    grid = load_sweep(write(tmp_path, space=space, sampler={"name": "grid", "seed": 0}))
    assert make_sampler(grid)._all_grids == make_sampler(grid, offset=100_004)._all_grids
    rand = load_sweep(write(tmp_path, space=space, sampler={"name": "random", "seed": 0}))
    draws = [make_sampler(rand, offset=k)._rng.rng.random() for k in (0, 0, 1)]
    assert draws[0] == draws[1] != draws[2]
