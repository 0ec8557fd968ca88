"""Typed configuration: YAML loading with ``base:`` inheritance, profiles and dotted overrides, into the schema
of :mod:`softclip.schema` (whose section classes are importable from here too).

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
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from softclip.errors import SoftclipError
from softclip.schema import (  # noqa: F401  (re-exported: the schema's names are importable from here)
    SCENE_SOURCES,
    ClusterConfig,
    Config,
    DataConfig,
    EvalConfig,
    LauncherConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RoiConfig,
    TrainConfig,
)

PROFILES = ("smoke", "quick", "paper")
RESERVED_KEYS = ("base", "profiles")

class ConfigError(SoftclipError, ValueError):
    """A configuration problem; the message names the key, the value and what is allowed."""

    exit_code = 2
    label = "config error"


# --------------------------------------------------------------------------------------------- loading


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(f"line {line}: key {key!r} is given twice in one mapping (lines {seen[key]} "
                                    f"and {line}); give it once")  # fmt: skip
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)


def _leaf_paths(key: str, value: Any) -> list[str]:
    """Dotted paths of the values under ``key: value`` (``loss: {beta: 0.5}`` -> ``[loss.beta]``)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaf_paths(f"{key}.{k}", v)]
    return [key]


def _spelling(key: str, path: str) -> str:
    """How ``key`` spells ``path``: ``loss.beta`` itself, or ``loss: {beta: ...}``."""
    if key == path:
        return key
    rest = path[len(key) + 1 :]
    return f"{key}: {{{rest}: ...}}"


def check_spellings(data: Any, source: str, where: str = "") -> None:
    """Refuse one key spelled twice in one mapping, dotted and nested (``loss.beta: 0.1`` beside
    ``loss: {beta: 0.5}``), anywhere in a file (configs, profiles, ablation variants, sweep spaces): which one
    wins would depend on the order they are applied in.

    Raises:
        ConfigError: naming both spellings, where they are and the file.
    """
    if isinstance(data, list):
        for i, item in enumerate(data):
            check_spellings(item, source, f"{where}[{i}]")
        return
    if not isinstance(data, dict):
        return
    leaves: dict[str, str] = {}  # dotted leaf path -> the key of this mapping that sets it
    for key, value in data.items():
        for path in _leaf_paths(str(key), value):
            for seen, other in leaves.items():
                overlap = seen == path or path.startswith(seen + ".") or seen.startswith(path + ".")
                if overlap and other != str(key):
                    place = f" under {where}" if where else ""
                    shown = min(seen, path, key=len)
                    raise ConfigError(f"{source}: {shown!r} is set twice{place}, as {_spelling(other, seen)!r} "
                                      f"and as {_spelling(str(key), path)!r}; give it once")  # fmt: skip
        for path in _leaf_paths(str(key), value):
            leaves[path] = str(key)
    for key, value in data.items():
        check_spellings(value, source, f"{where}.{key}" if where else str(key))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (``yaml.SafeLoader``, duplicate keys refused); errors name the file.

    Raises:
        ConfigError: a missing file, invalid YAML, a key given twice (also as dotted and nested spellings).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    check_spellings(data, str(path))
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


# ---------------------------------------------------------------------------------- degenerate settings


def check_trainable(cfg: Config) -> list[str]:
    """Refuse a config under which the objective is degenerate (the run would train, exit 0 and mean nothing);
    returns warnings for settings that are legal but probably not meant.

    The contrastive batch is ``data.batch_size`` whatever the split: features are all-gathered over the W ranks
    and gradient accumulation evaluates the whole batch's objective (``softclip/train/step.py``), so a
    micro-batch of 1 per rank is fine and a global batch of 1 is not.

    Raises:
        ConfigError: naming the keys and why the objective is degenerate under them.
    """
    loss = cfg.loss
    if cfg.data.batch_size < 2:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size}: the contrastive batch (the global batch of a step, all ranks "
            "and micro-batches together) needs at least 2 pairs; with 1 every logit row has one column, every "
            "loss term is 0 and nothing trains"
        )
    soft_targets = loss.target != "hard" and loss.beta > 0
    live = {"loss.nce_weight": loss.nce_weight > 0, "loss.soft_weight": loss.soft_weight > 0,
            "loss.re_weight": loss.re_weight > 0 and soft_targets}  # fmt: skip
    if not any(live.values()):
        why = "" if loss.re_weight == 0 else (f" (loss.re_weight={loss.re_weight} has no off-diagonal target "
                                              f"mass to act on with loss.target={loss.target}, loss.beta={loss.beta})")  # fmt: skip
        raise ConfigError(
            f"loss.nce_weight={loss.nce_weight}, loss.soft_weight={loss.soft_weight}, "
            f"loss.re_weight={loss.re_weight}: no term of the objective compares image-text pairs{why}, so the "
            "towers get no contrastive gradient; give one of them a weight > 0"
        )
    if loss.target == "label_smoothing" and loss.beta == 1 and loss.nce_weight == 0:
        raise ConfigError(
            "loss.target=label_smoothing with loss.beta=1 and loss.nce_weight=0: every target row is uniform, so "
            "nothing tells the matching caption from the others; lower loss.beta or give loss.nce_weight a weight"
        )
    missing = [k for k, v in (("loss.image_source=roi", loss.image_source == "roi"),
                              ("loss.text_source=tag", loss.text_source == "tag")) if v]  # fmt: skip
    if loss.target == "selfsim" and soft_targets and missing and not cfg.data.sidecars:
        raise ConfigError(
            f"loss.target=selfsim with {' and '.join(missing)} reads regions/tags from the sidecars, but "
            "data.sidecars=false: every self-similarity target row would be one-hot (plain CLIP); set "
            "data.sidecars=true, or loss.image_source=image / loss.text_source=text"
        )
    warnings = []
    if cfg.optim.warmup_steps >= cfg.train.steps:
        warnings.append(f"optim.warmup_steps={cfg.optim.warmup_steps} >= train.steps={cfg.train.steps}: the "
                        f"learning rate never reaches optim.lr={cfg.optim.lr}")  # fmt: skip
    return warnings


# ------------------------------------------------------------------------- specs (sweeps, ablations)


def load_cluster(path: str | Path | None) -> ClusterConfig:
    """Read and validate a cluster YAML (None: all defaults). Errors are ConfigErrors naming the key."""
    if path is None:
        return ClusterConfig()
    data = read_yaml(path)
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, str(path), ClusterConfig)) from None


def with_cluster(spec: Any, cluster: str | Path | None) -> Any:
    """``spec`` (a sweep or ablation spec) with ``launcher.cluster`` set to ``cluster`` (checked now: a missing
    or invalid file is a ConfigError naming it); ``None`` returns ``spec`` unchanged."""
    if cluster is None:
        return spec
    load_cluster(cluster)
    return spec.model_copy(update={"launcher": spec.launcher.model_copy(update={"cluster": str(cluster)})})


def base_data(spec: Any) -> dict[str, Any]:
    """The base config of a sweep or ablation spec (its ``source``, ``base``, ``overrides`` and ``profile``) with
    the profile (if the base config has it) and the spec's fixed overrides applied."""
    base = (Path(spec.source).parent / spec.base).resolve()
    data = load_raw(base)
    profiles = data.get("profiles") or {}
    if spec.profile is not None and spec.profile not in profiles and profiles:
        known = ", ".join(sorted(profiles))
        raise ConfigError(f"{spec.source}: profile {spec.profile!r} is not in {base} (profiles: {known})")
    data = apply_profile(data, spec.profile if spec.profile in profiles else None, str(base))
    for key, value in spec.overrides.items():
        parts = key.split(".")
        check_key(parts, source=f"{spec.source}: overrides")
        set_dotted(data, parts, value)
    return data


def build_run_config(data: dict[str, Any], params: dict[str, Any], source: str, **top: Any) -> Config:
    """Overlay searched ``params`` (dotted keys) and top-level fields on ``data`` and validate."""
    data = deep_merge(data, {})
    for key, value in params.items():
        set_dotted(data, key.split("."), value)
    data.update(top)
    return build_config(expand_env(data, source), source)


# ---------------------------------------------------------------------------------------------- errors


def _model_at(parts: list[str] | tuple[Any, ...], root: type[BaseModel] = Config) -> type[BaseModel] | None:
    """The pydantic model class holding the fields at ``parts`` (a path of section names; in a
    ``dict[str, Model]`` field the next part is a key and is skipped)."""
    model: type[BaseModel] = root
    keyed = False
    for part in parts:
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        args = typing.get_args(ann)
        if typing.get_origin(ann) is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            ann, keyed = args[1], True
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return None if keyed else model


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
    if model is Config:
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


def format_validation_error(
    err: ValidationError, data: dict[str, Any], source: str, root: type[BaseModel] = Config
) -> str:
    """One line per problem: key, offending value and what is allowed (``root``: the model ``data`` was
    validated against — a run config, a sweep or an ablation file)."""
    lines = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        key = ".".join(str(p) for p in loc)
        kind = item["type"]
        value = _lookup(data, loc)
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1], root) or root
            lines.append(_unknown_key_message(loc, model, source))
        elif kind == "missing":
            lines.append(f"{source}: {key}: required key is missing")
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            field_ctx = _field_range(loc, root) or item.get("ctx", {})
            lines.append(f"{source}: {key}={value!r} is out of range; allowed: {_range_text(field_ctx)}")
        elif kind == "literal_error":
            allowed = item.get("ctx", {}).get("expected", "")
            lines.append(f"{source}: {key}={value!r} is not allowed; allowed: {allowed}")
        elif kind == "value_error":
            msg = str(item.get("ctx", {}).get("error", item["msg"]))
            if not loc:  # () = a cross-key rule of the whole config
                lines.append(f"{source}: {msg}")
            elif isinstance(value, dict):  # a cross-key rule of one section: the message names its keys
                lines.append(f"{source}: {key}: {msg}")
            else:
                lines.append(f"{source}: {key}={value!r} {msg}")
        else:
            bounds = _range_text(_field_range(loc, root))
            allowed = f"; allowed: {bounds}" if bounds else ""
            lines.append(f"{source}: {key}={value!r}: {item['msg'].lower()}{allowed}")
    return "\n".join(lines)


def _field_range(loc: tuple[Any, ...], root: type[BaseModel] = Config) -> dict[str, Any]:
    """The full (lower and upper) bounds declared on a field, for messages."""
    model = _model_at(loc[:-1], root)
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
