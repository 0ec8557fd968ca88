"""Configuration: inheritance, profiles, overrides and the error messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from softclip.cli import main
from softclip.config import Config, ConfigError, load_config, save_config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    write(
        tmp_path / "parent.yaml",
        {
            "name": "parent",
            "loss": {"beta": 0.2, "tau": 0.05},
            "train": {"steps": 100},
            "profiles": {"smoke": {"train": {"steps": 5}}, "quick": {"train": {"steps": 50}}},
        },
    )
    return write(
        tmp_path / "child.yaml",
        {"base": "parent.yaml", "name": "child", "loss": {"beta": 0.4}, "profiles": {"smoke": {"loss": {"tau": 0.1}}}},
    )


def test_defaults_are_the_paper_defaults():
    cfg = load_config()
    assert (cfg.loss.beta, cfg.loss.tau, cfg.loss.soft_weight, cfg.loss.re_weight) == (0.3, 0.07, 1.0, 0.5)
    assert cfg.loss.target == "selfsim" and cfg.loss.divergence == "symkl"


def test_base_inheritance_merges_sections(chain: Path):
    cfg = load_config(chain)
    assert cfg.name == "child"
    assert cfg.loss.beta == 0.4 and cfg.loss.tau == 0.05  # child overrides one key, inherits the other
    assert cfg.train.steps == 100 and cfg.profile is None


def test_profiles_merge_along_the_chain(chain: Path):
    smoke = load_config(chain, profile="smoke")
    assert smoke.train.steps == 5 and smoke.loss.tau == 0.1 and smoke.profile == "smoke"
    assert load_config(chain, profile="quick").train.steps == 50


def test_overrides_scalars_lists_and_null(chain: Path):
    cfg = load_config(chain, ["loss.beta=0.5", "data.epoch_samples=null", "data.epoch_samples=1000", "seed=3"])
    assert cfg.loss.beta == 0.5 and cfg.data.epoch_samples == 1000 and cfg.seed == 3
    assert load_config(chain, ["data.epoch_samples=null"]).data.epoch_samples is None
    assert load_config(chain, ["launcher.cluster=null"]).launcher.cluster is None


def test_overrides_apply_after_profile(chain: Path):
    assert load_config(chain, ["train.steps=7"], profile="smoke").train.steps == 7


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("loss.betta=0.5", ["loss.betta", "did you mean 'loss.beta'"]),
        ("optim.lrr=1e-3", ["optim.lrr", "'optim.lr'"]),
        ("loss.beta=1.5", ["loss.beta=1.5", "out of range", ">= 0.0", "<= 1.0"]),
        ("loss.tau=0", ["loss.tau=0", "> 0.0"]),
        ("loss.re_weight=-1", ["loss.re_weight=-1", ">= 0.0"]),
        ("roi.aggregation=avg", ["roi.aggregation='avg'", "mean", "mhsa"]),
        ("loss.target=selfsimm", ["loss.target='selfsimm'", "did you mean 'selfsim'"]),
        ("loss.divergence=js", ["loss.divergence='js'", "symkl"]),
        ("train.steps=abc", ["train.steps='abc'", "valid integer", ">= 1"]),
        ("train.precision=fp8", ["train.precision='fp8'", "bf16"]),
        ("loss.beta.x=1", ["loss.beta is a value"]),
    ],
)
def test_errors_name_key_value_and_allowed(override: str, expected: list[str]):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for text in expected:
        assert text in str(err.value), (text, str(err.value))


def test_unknown_key_in_file_names_file_and_nearest(tmp_path: Path):
    path = write(tmp_path / "bad.yaml", {"loss": {"bta": 0.1}})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*loss\.bta.*did you mean 'loss\.beta'"):
        load_config(path)


def test_unknown_profile_lists_the_defined_ones(chain: Path):
    with pytest.raises(ConfigError, match=r"profile 'paper' is not defined.*quick, smoke"):
        load_config(chain, profile="paper")


def test_base_cycle_and_missing_file(tmp_path: Path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_malformed_override_and_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["loss.beta"])
    bad = tmp_path / "broken.yaml"
    bad.write_text("loss: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml.*invalid YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path: Path, chain: Path):
    cfg = load_config(chain, ["loss.beta=0.6"], profile="smoke")
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and again.hash() == cfg.hash()
    assert cfg.hash() != load_config(chain).hash()


def test_cli_exits_2_with_message_not_traceback(capsys: pytest.CaptureFixture[str], chain: Path):
    code = main(["config", str(chain), "loss.beta=2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "loss.beta=2" in err and "out of range" in err and "Traceback" not in err


def test_cli_config_prints_resolved(capsys: pytest.CaptureFixture[str], chain: Path):
    assert main(["config", str(chain), "--profile", "smoke", "--json"]) == 0
    assert '"steps": 5' in capsys.readouterr().out


def _run_configs() -> list[str]:
    """Shipped single-run configs (ablation grids, which hold ``variants``, have their own loader)."""
    paths = sorted((REPO / "ablations").glob("*.yaml"))
    return [p.relative_to(REPO).as_posix() for p in paths if "variants" not in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", _run_configs())
def test_shipped_run_configs_validate_in_every_profile(path: str):
    raw = yaml.safe_load((REPO / path).read_text())
    profiles = list((raw or {}).get("profiles", {}) or {})
    assert {"smoke", "quick", "paper"} <= set(profiles)
    for profile in [None, *profiles]:
        assert isinstance(load_config(REPO / path, profile=profile), Config)


def test_environment_variables_expand_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path / "env.yaml", {"data": {"root": "${SC_TEST_ROOT:-fallback}/cc3m", "train": "${SC_TEST_SHARDS}"}})
    monkeypatch.setenv("SC_TEST_SHARDS", "/x/{00000..00009}.tar")
    cfg = load_config(path)
    assert cfg.data.root == "fallback/cc3m" and cfg.data.train == "/x/{00000..00009}.tar"
    monkeypatch.setenv("SC_TEST_ROOT", "/datasets")
    assert load_config(path).data.root == "/datasets/cc3m"
    monkeypatch.delenv("SC_TEST_SHARDS")
    with pytest.raises(ConfigError, match="data.train needs the environment variable SC_TEST_SHARDS"):
        load_config(path)


def test_list_prints_every_registry_and_rejects_unknown_tables(capsys):
    assert main(["list", "launchers"]) == 0
    assert capsys.readouterr().out.strip() == (
        "launchers: inprocess, processes, slurm, submitit-local")
    assert main(["list"]) == 0
    heads = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert heads == ["targets", "contrastives", "divergences", "pairings", "impls", "one_hot_rows", "roi_logit_scales", "aggregations",
                     "launchers", "samplers", "pruners", "trials"]  # fmt: skip
    assert main(["list", "launcher"]) == 2
    assert "unknown table 'launcher'" in capsys.readouterr().err


# --------------------------------------------------------------- no quietly wrong run (issue 33, item 5)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "overrides,reason",
    [
        ({"data": {"batch_size": 1}}, "data.batch_size=1: the contrastive batch"),
        ({"loss": {"nce_weight": 0.0, "soft_weight": 0.0, "re_weight": 0.0}}, "no term of the objective compares"),
        ({"loss": {"target": "hard", "nce_weight": 0.0, "soft_weight": 0.0}}, "no off-diagonal target mass"),
        ({"loss": {"beta": 0.0, "nce_weight": 0.0, "soft_weight": 0.0}}, "no off-diagonal target mass"),
        ({"loss": {"target": "label_smoothing", "beta": 1.0, "nce_weight": 0.0}}, "every target row is uniform"),
        ({"data": {"sidecars": False}}, "data.sidecars=false: every self-similarity target row would be one-hot"),
    ],
)  # fmt: skip
def test_degenerate_objectives_are_refused_with_the_reason(overrides: dict, reason: str) -> None:
    from softclip.config import check_trainable

    with pytest.raises(ConfigError, match=reason.replace("(", r"\(")):
        check_trainable(Config.model_validate(overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"data": {"batch_size": 2}},  # the smallest contrastive batch
        {"data": {"batch_size": 4}, "optim": {"accum_steps": 4}},  # micro-batches of 1: the objective sees all 4
        {"loss": {"nce_weight": 0.0, "re_weight": 0.0}},  # the soft term alone is a contrastive loss
        {"loss": {"target": "hard", "soft_weight": 0.0, "re_weight": 0.0}},  # plain CLIP
        {"loss": {"target": "label_smoothing", "beta": 1.0}},  # uniform targets, but InfoNCE still there
        {"data": {"sidecars": False}, "loss": {"image_source": "image", "text_source": "text"}},
    ],
)
def test_legal_settings_near_the_edge_pass(overrides: dict) -> None:
    from softclip.config import check_trainable

    check_trainable(Config.model_validate(overrides))


def test_warmup_longer_than_training_is_a_warning_not_an_error() -> None:
    from softclip.config import check_trainable

    warnings = check_trainable(Config.model_validate({"train": {"steps": 10}, "optim": {"warmup_steps": 10}}))
    assert warnings == ["optim.warmup_steps=10 >= train.steps=10: the learning rate never reaches optim.lr=0.0005"]


def test_training_with_batch_1_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", str(REPO_ROOT / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir", str(run),
            "--no-eval", "data.batch_size=1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.batch_size=1" in err[0] and "every loss term is 0" in err[0]
    assert not run.exists()


@pytest.mark.parametrize(
    "text,message",
    [
        ("loss.beta: 0.1\nloss:\n  beta: 0.5\n", "'loss.beta' is set twice, as 'loss.beta' and as 'loss: {beta: ...}'"),
        ("loss:\n  beta: 0.5\nloss.beta: 0.1\n", "'loss.beta' is set twice, as 'loss: {beta: ...}' and as 'loss.beta'"),
        ("loss:\n  beta: 0.1\n  beta: 0.5\n", "line 3: key 'beta' is given twice in one mapping (lines 2 and 3)"),
        ("profiles:\n  smoke:\n    loss.beta: 0.1\n    loss: {beta: 0.5}\n", "set twice under profiles.smoke"),
        ("variants:\n  v:\n    loss.beta: 0.1\n    loss: {beta: 0.5, tau: 0.1}\n", "set twice under variants.v"),
        ("loss: 0.3\nloss.beta: 0.1\n", "'loss' is set twice, as 'loss' and as 'loss.beta'"),
    ],
)  # fmt: skip
def test_one_key_spelled_twice_in_a_file_is_an_error_naming_both_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    from softclip.config import read_yaml

    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_an_ablation_variant_with_two_spellings_is_refused(tmp_path: Path) -> None:
    from softclip.ablate import load_ablation

    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump({"name": "twice", "base": str(REPO_ROOT / "ablations" / "base.yaml"),
                                    "seeds": [0], "variants": {"a": {}}}) +  # fmt: skip
                    "  b:\n    loss.beta: 0.1\n    loss: {beta: 0.5}\n")
    with pytest.raises(ConfigError, match=r"'loss.beta' is set twice under variants.b"):
        load_ablation(path)


def test_distinct_dotted_keys_sharing_a_section_are_fine(tmp_path: Path) -> None:
    from softclip.config import read_yaml

    path = tmp_path / "ok.yaml"
    path.write_text("space:\n  loss.beta: {type: float}\n  loss.tau: {type: float}\n"
                    "overrides: {loss.beta: 1, data: {root: x}, data.workers: 1}\n")  # fmt: skip
    assert read_yaml(path)["overrides"]["data.workers"] == 1
