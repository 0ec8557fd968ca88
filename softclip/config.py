"""Typed configuration: schema, YAML loading with ``base:`` inheritance, profiles and dotted overrides.

A config file is YAML. Besides the schema's sections it may hold

- ``base: other.yaml`` — a file (relative to this one) whose content this one overlays (deep merge; lists and
  scalars replace);
- ``profiles: {smoke: {...}, quick: {...}, paper: {...}}`` — overlays selected with ``--profile``; profiles are
  inherited and merged along the ``base:`` chain like everything else.

Resolution order: base chain → this file → the chosen profile → ``key=value`` overrides. Every error is a
:class:`ConfigError` whose message names the key (and the file where one is involved).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from softclip.data.synth.spec import SynthConfig
from softclip.errors import SoftclipError

PROFILES = ("smoke", "quick", "paper")
SCENE_SOURCES = ("synth", "wds")  # data sources whose samples can carry scene annotations (loss.target=oracle)
RESERVED_KEYS = ("base", "profiles")

NonNegFloat = Annotated[float, Field(ge=0.0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


class ConfigError(SoftclipError, ValueError):
    """A configuration problem; the message names the key, the value and what is allowed."""

    exit_code = 2
    label = "config error"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _choice(value: str, names: list[str], key: str) -> str:
    if value not in names:
        hint = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"must be one of: {', '.join(names)}{extra}")
    return value


class ModelConfig(_Section):
    """Towers: any open_clip config name (trained from scratch) or a tiny preset from softclip/model_configs."""

    name: str = Field("tiny-vit", description="open_clip model config name, e.g. tiny-vit, RN50, ViT-B-32")


class RoiConfig(_Section):
    """ROI aggregator that turns per-image region features into the image-side self-similarity feature A."""

    aggregation: str = Field("mean", description="mean | max | min | mhsa (see list_aggregators())")
    train: Literal["learn", "frozen"] = Field("learn", description="learn the aggregator (γ·L_roi) or freeze it")
    width: PosInt = 256
    layers: PosInt = 1
    heads: PosInt = 4
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @field_validator("aggregation")
    @classmethod
    def _known_aggregation(cls, v: str) -> str:
        from softclip.objective.roi import list_aggregators

        return _choice(v, list_aggregators(), "roi.aggregation")


class LossConfig(_Section):
    """The SoftCLIP objective (DESIGN.md, 'The SoftCLIP objective'). Paper defaults."""

    target: str = Field(
        "selfsim", description="hard | label_smoothing | selfsim | oracle (SynthScenes' true matches, a positive control)"
    )
    beta: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.3, description="β, weight of the soft part")
    tau: Annotated[float, Field(gt=0.0)] = Field(0.07, description="τ, self-similarity temperature")
    divergence: str = Field("symkl", description="kl | symkl | ce")
    pairing: str = Field("same", description="same | cross | mean")
    image_source: Literal["roi", "image"] = "roi"
    text_source: Literal["tag", "text"] = "tag"
    nce_weight: NonNegFloat = 1.0
    soft_weight: NonNegFloat = Field(1.0, description="λ")
    re_weight: NonNegFloat = Field(0.5, description="µ")
    roi_weight: NonNegFloat = Field(1.0, description="γ, auxiliary ROI↔tag InfoNCE when the aggregator learns")
    roi_logit_scale: Literal["shared", "detached"] = Field(
        "shared", description="ROI↔tag InfoNCE multiplier: CLIP's s, trained by it too (shared) or not (detached)"
    )
    reverse_floor: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        1e-8, description="floor of y in the reverse KL term KL(P‖Y), which is infinite where y = 0 < p"
    )
    one_hot_rows: Literal["forward", "floored"] = Field(
        "forward", description="target rows with one nonzero entry: forward KL only (= InfoNCE) or floored reverse"
    )
    impl: Literal["reference", "fused"] = Field(
        "fused", description="reference (plain autograd, the definition) or fused (hand-written backward)"
    )

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        from softclip.objective import list_targets

        return _choice(v, list_targets(), "loss.target")

    @field_validator("divergence")
    @classmethod
    def _known_divergence(cls, v: str) -> str:
        from softclip.objective import list_divergences

        return _choice(v, list_divergences(), "loss.divergence")

    @field_validator("pairing")
    @classmethod
    def _known_pairing(cls, v: str) -> str:
        from softclip.objective import list_pairings

        return _choice(v, list_pairings(), "loss.pairing")


class DataConfig(_Section):
    """Training data. ``source: synth`` generates SynthScenes under ``root`` when absent."""

    source: Literal["synth", "wds", "csv"] = "synth"
    root: str = Field("data/synthscenes", description="dataset folder (synth: generated here when absent)")
    train: str | None = Field(None, description="wds: shard folder or brace pattern; default ROOT/train")
    csv: str | None = None
    features_tsv: str | None = None
    labels_tsv: str | None = None
    images_root: str | None = None
    batch_size: PosInt = Field(128, description="global batch per optimiser step (split over ranks and accum_steps)")
    workers: NonNegInt = 0
    shuffle_buffer: NonNegInt = 1000
    resampled: bool = False
    kmax: PosInt = Field(8, description="regions per image kept after padding/truncation")
    sidecars: bool = Field(True, description="read ROI sidecars (.roi.npy, .tags.json); false for plain CLIP data")
    roi_dim: Annotated[int, Field(ge=7, le=65536)] | None = Field(
        None, description="region feature width D (last 6 = box geometry); None: data.synth.detector.roi_dim "
        "for source synth, 2054 (VinVL) otherwise"
    )
    max_bad_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    epoch_samples: PosInt | None = None
    synth: SynthConfig = Field(default_factory=SynthConfig)


class OptimConfig(_Section):
    """AdamW with cosine schedule and linear warmup."""

    lr: Annotated[float, Field(gt=0.0)] = 5e-4
    weight_decay: NonNegFloat = 0.1
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.98
    eps: Annotated[float, Field(gt=0.0)] = 1e-6
    warmup_steps: NonNegInt = 100
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    grad_clip: NonNegFloat = Field(1.0, description="max gradient norm; 0 disables")
    accum_steps: PosInt = 1
    fused: bool | None = Field(None, description="fused AdamW; None = where supported")


class TrainConfig(_Section):
    """Loop, precision, checkpointing and logging."""

    steps: PosInt = 2000
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    log_every: PosInt = 10
    ckpt_every: PosInt = 200
    keep_checkpoints: PosInt = 2
    eval_every: NonNegInt = Field(0, description="periodic evaluation every N steps; 0 = only at the end")
    nan_policy: Literal["stop", "skip"] = "stop"
    max_skipped_steps: NonNegInt = 10
    logit_scale_max: Annotated[float, Field(gt=0.0)] = 100.0
    threads: NonNegInt = Field(0, description="torch CPU threads; 0 = torch default")
    tensorboard: bool = False
    best_metric: str | None = Field(
        None, description="evaluation metric that selects checkpoints/best.pt; None: the first one returned"
    )
    best_mode: Literal["max", "min"] = Field("max", description="whether a larger best_metric is better")


class EvalConfig(_Section):
    """Evaluation suite run at the end of training (and by ``softclip eval``)."""

    suite: str = "eval/synthetic.yaml"
    batch_size: PosInt = 256
    cache: bool = True


class LauncherConfig(_Section):
    """Where jobs run (ablations and sweeps)."""

    name: str = Field("inprocess", description="inprocess | processes | slurm | slurm-pool | submitit-local | submitit-local-pool")
    cluster: str | None = Field(None, description="cluster YAML (partition, account, GPUs, time, ...)")
    workers: PosInt = Field(1, description="jobs (trials, ablation runs) in flight at once")
    cpus_per_job: PosInt = Field(1, description="CPU threads per job (OMP/MKL/torch threads are set to this)")
    cpu_budget: PosInt | None = Field(
        None, description="CPUs the local launchers may use in all (None: every CPU of this machine)"
    )


class Config(_Section):
    """A full run configuration (what ``softclip train`` consumes)."""

    name: str = Field("run", description="run folder name under output_dir")
    seed: NonNegInt = 0
    profile: str | None = Field(None, description="set by --profile; recorded for provenance")
    output_dir: str = "runs"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    roi: RoiConfig = Field(default_factory=RoiConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)

    @model_validator(mode="after")
    def _oracle_needs_scenes(self) -> Config:
        if self.loss.target == "oracle" and self.data.source not in SCENE_SOURCES:
            raise ValueError(
                f"loss.target=oracle needs scene annotations (each sample's objects and caption mentions, which "
                f"SynthScenes shards carry in their .json); data.source={self.data.source} has none "
                f"(sources with them: {', '.join(SCENE_SOURCES)})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Short stable hash of the resolved config (provenance in result files)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------------------------- loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` overlaid with ``over``: mappings merge recursively, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a config file with its ``base:`` chain merged in (profiles still unapplied)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"base: cycle in config inheritance: {chain}")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file path, got {base!r}")
    target = path.parent / base
    if not target.is_file():
        raise ConfigError(f"{path}: base: {base!r} not found (looked for {target})")
    parent = load_raw(target, (*_seen, path))
    return deep_merge(parent, data)


def check_no_repeats(overrides: list[str] | tuple[str, ...]) -> None:
    """Refuse a key given twice on one command line (which one wins would be a guess): ConfigError naming it."""
    seen: dict[str, str] = {}
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in seen:
            raise ConfigError(f"override key {key!r} is given twice ({seen[key]!r} and {text!r}); give it once")
        seen[key] = text


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value in YAML syntax: numbers, true/false, null, [lists])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. loss.beta=0.5")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            key = ".".join(parts[: i + 1])
            raise ConfigError(f"override {'.'.join(parts)}: {key} is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_profile(data: dict[str, Any], profile: str | None, source: str) -> dict[str, Any]:
    """Overlay ``profiles[profile]`` (if any profile is chosen) and drop the ``profiles`` table."""
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{source}: profiles must be a mapping of name -> overrides")
    if profile is None:
        return data
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"profile {profile!r} is not defined in {source} (defined: {known})")
    merged = deep_merge(data, profiles[profile] or {})
    merged["profile"] = profile
    return merged


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, source: str, key: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in string values (cluster paths come from the environment).

    Raises:
        ConfigError: naming the key and the variable when it is unset and has no default.
    """
    if isinstance(data, dict):
        return {k: expand_env(v, source, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, source, f"{key}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def repl(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        value = os.environ.get(var)
        if value is None:
            if default is None:
                raise ConfigError(f"{source}: {key} needs the environment variable {var}, which is not set")
            value = default
        return value

    return _ENV.sub(repl, data)


def build_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a plain mapping into a :class:`Config`, translating errors into :class:`ConfigError`."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, source)) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    profile: str | None = None,
) -> Config:
    """Load, merge, overlay the profile, apply ``key=value`` overrides and validate.

    Args:
        path: YAML file (None: schema defaults only).
        overrides: dotted ``key=value`` strings, applied last.
        profile: one of the file's ``profiles`` (usually smoke, quick or paper).

    Raises:
        ConfigError: naming the file, key, value and the allowed values or range.
    """
    source = str(path) if path is not None else "<defaults>"
    data = load_raw(path) if path is not None else {}
    data = apply_profile(data, profile, source)
    for text in overrides:
        parts, value = parse_override(text)
        check_key(parts, source=f"override {text!r}")
        set_dotted(data, parts, value)
    return build_config(expand_env(data, source), source)


# ---------------------------------------------------------------------------------------------- errors


def _model_at(parts: list[str] | tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class holding the fields at ``parts`` (a path of section names)."""
    model: type[BaseModel] = Config
    for part in parts:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def check_key(parts: list[str], source: str) -> None:
    """Raise ConfigError if the dotted key does not exist in the schema, naming the closest valid key."""
    for depth in range(len(parts)):
        model = _model_at(parts[:depth])
        if model is None:
            prefix = ".".join(parts[:depth])
            raise ConfigError(f"{source}: {prefix} is a value, not a section; it has no key {parts[depth]!r}")
        if parts[depth] not in model.model_fields:
            raise ConfigError(_unknown_key_message(parts[: depth + 1], model, source))


def _unknown_key_message(parts: list[str] | tuple[Any, ...], model: type[BaseModel], source: str) -> str:
    key = ".".join(str(p) for p in parts)
    names = list(model.model_fields)
    if not parts[:-1]:
        names = names + list(RESERVED_KEYS)
    hint = difflib.get_close_matches(str(parts[-1]), names, n=1, cutoff=0.5)
    prefix = ".".join(str(p) for p in parts[:-1])
    if hint:
        valid = f"{prefix}.{hint[0]}" if prefix else hint[0]
        return f"{source}: unknown key {key!r}; did you mean {valid!r}?"
    return f"{source}: unknown key {key!r}; valid keys here: {', '.join(names)}"


def _range_text(ctx: dict[str, Any]) -> str:
    lo = next((f"{'>=' if k == 'ge' else '>'} {ctx[k]}" for k in ("ge", "gt") if k in ctx), None)
    hi = next((f"{'<=' if k == 'le' else '<'} {ctx[k]}" for k in ("le", "lt") if k in ctx), None)
    return " and ".join(x for x in (lo, hi) if x)


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return "<missing>"
    return data


def format_validation_error(err: ValidationError, data: dict[str, Any], source: str) -> str:
    """One line per problem: key, offending value and what is allowed."""
    lines = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        key = ".".join(str(p) for p in loc)
        kind = item["type"]
        value = _lookup(data, loc)
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1]) or Config
            lines.append(_unknown_key_message(loc, model, source))
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            field_ctx = _field_range(loc) or item.get("ctx", {})
            lines.append(f"{source}: {key}={value!r} is out of range; allowed: {_range_text(field_ctx)}")
        elif kind == "literal_error":
            allowed = item.get("ctx", {}).get("expected", "")
            lines.append(f"{source}: {key}={value!r} is not allowed; allowed: {allowed}")
        elif kind == "value_error":
            msg = str(item.get("ctx", {}).get("error", item["msg"]))
            lines.append(f"{source}: {key}={value!r} {msg}" if loc else f"{source}: {msg}")  # () = cross-key
        else:
            bounds = _range_text(_field_range(loc))
            allowed = f"; allowed: {bounds}" if bounds else ""
            lines.append(f"{source}: {key}={value!r}: {item['msg'].lower()}{allowed}")
    return "\n".join(lines)


def _field_range(loc: tuple[Any, ...]) -> dict[str, Any]:
    """The full (lower and upper) bounds declared on a field, for messages."""
    model = _model_at(loc[:-1])
    if model is None or str(loc[-1]) not in model.model_fields:
        return {}
    bounds: dict[str, Any] = {}
    for meta in model.model_fields[str(loc[-1])].metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                bounds[name] = getattr(meta, name)
    return bounds


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    from softclip.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
