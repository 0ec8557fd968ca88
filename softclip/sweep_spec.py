"""The sweep file's schema (pydantic, extra=forbid): a base run config, fixed overrides, a search space over dotted
config keys (conditional parameters, the grid), objective metric(s), sampler, pruner, storage, training seeds and
launcher. The format: ``docs/ablations.md``; ``sweeps/softclip_tpe.yaml`` is a commented example. Errors are
ConfigErrors naming the key. :mod:`softclip.sweep` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from softclip.config import (
    ConfigError,
    apply_profile,
    base_data,
    build_run_config,
    check_key,
    format_validation_error,
    read_yaml,
)
from softclip.resources import resolve
from softclip.schema import LauncherOverrides, Seeds

PosInt = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One searched config key: ``float`` / ``int`` in [low, high] (``log``, ``step``) or ``categorical``.

    ``when: {other.key: value-or-list}`` samples the parameter only when that (searched) parameter took one of
    the listed values; otherwise the run keeps the base config's value.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None
    when: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("categorical takes 'choices' only (no low/high/log/step)")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"needs low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int needs whole-number low and high")
        return self

    def allowed_parent_values(self) -> dict[str, list[Any]]:
        """``when`` with every condition as a list of accepted values."""
        return {k: (v if isinstance(v, list) else [v]) for k, v in (self.when or {}).items()}


class ObjectiveSpec(_Strict):
    """A metric of the evaluation results, ``benchmark/metric`` (e.g. ``retrieval/i2t_r1``)."""

    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(_Strict):
    name: str = Field("tpe", description="tpe | random | grid | cmaes | qmc | nsga2")
    seed: int | None = Field(0, description="sampler seed (None: random)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the optuna sampler")


class PrunerSpec(_Strict):
    name: str = Field("none", description="none | median | hyperband | asha")
    metric: str | None = Field(None, description="intermediate metric (default: the first objective's)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the optuna pruner")


class SweepSpec(_Strict):
    """A whole sweep file (after its profile overlay)."""

    name: str = Field(description="study name and folder name under output_dir")
    base: str = Field(description="run config every trial starts from, relative to the sweep file")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, every trial")
    space: dict[str, ParamSpec]
    objective: list[ObjectiveSpec] = Field(min_length=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: PosInt | None = Field(None, description="complete+pruned trials to reach (grid: the grid size)")
    seeds: Seeds = Field(default_factory=lambda: [0], description="training seeds per trial (mean taken)")
    storage: str | None = Field(None, description="sqlite:///..., postgresql://..., journal:PATH")
    study_name: str | None = None
    output_dir: str = "runs/sweeps"
    trial: str = Field("train", description="trial function: registry name or module:function")
    max_failures: PosInt | None = Field(None, description="stop after this many failed trials (default n_trials)")
    heartbeat_interval: PosInt = Field(30, description="seconds between trial heartbeats")
    grace_period: PosInt | None = Field(None, description="seconds without heartbeat before a trial is stale")
    max_retry: Annotated[int, Field(ge=0)] = Field(3, description="re-runs of a stale (lost) trial")
    launcher: LauncherOverrides = Field(default_factory=LauncherOverrides)  # type: ignore[valid-type]
    source: str = Field("<sweep>", description="the file this came from (set by the loader)")
    profile: str | None = None

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("space")
    @classmethod
    def _not_empty(cls, v: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not v:
            raise ValueError("the search space is empty: name at least one parameter to search")
        return v

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        for key, param in self.space.items():
            for parent in param.allowed_parent_values():
                if parent not in self.space:
                    raise ValueError(f"space.{key}.when: {parent!r} is not a searched parameter")
        if len(self.objective) > 1 and self.pruner.name != "none":
            raise ValueError("pruner: optuna cannot prune multi-objective studies; use pruner.name: none")
        return self

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objective]

    @property
    def prune_metric(self) -> str:
        return self.pruner.metric or self.objective[0].metric

    @property
    def effective_grace(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval


def load_sweep(path: str | Path, profile: str | None = None) -> SweepSpec:
    """Read a sweep YAML, overlay ``profiles[profile]`` if the file has it, validate (schema and config keys)."""
    path = resolve(path)
    data = read_yaml(path)
    profiles = data.get("profiles") or {}
    data = apply_profile(data, profile if profile in profiles else None, str(path))
    data.update(source=str(path), profile=profile)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, str(path), SweepSpec)) from None
    validate_against_config(spec)
    return spec


def sweep_dir(spec: SweepSpec) -> Path:
    """``<output_dir>/<profile>/<name>`` (``<output_dir>/<name>`` without a profile): one study per profile."""
    parts = [spec.profile] if spec.profile else []
    return Path(spec.output_dir, *parts, spec.name)


def sweep_identity(spec: SweepSpec) -> dict[str, Any]:
    """What a sweep is: its search space, objective, sampler, seeds, trial function and base run identity
    (:func:`softclip.identity.run_identity`), as JSON-able data (stored as a study user attribute)."""
    from softclip.identity import run_identity

    base = build_run_config(base_data(spec), {}, spec.source, profile=spec.profile).to_dict()
    return json.loads(json.dumps({
        "space": {k: p.model_dump(mode="json", exclude_defaults=True) for k, p in spec.space.items()},
        "objective": [o.model_dump(mode="json") for o in spec.objective],
        "sampler": spec.sampler.model_dump(mode="json"), "seeds": list(spec.seeds), "trial": spec.trial,
        "base": run_identity(base),
    }, default=str))  # fmt: skip


def validate_against_config(spec: SweepSpec) -> None:
    """Every searched key exists in the run config schema, and its bounds/choices are valid values there."""
    data = base_data(spec)
    build_run_config(data, {}, f"{spec.source} (base {spec.base})")
    for key, param in spec.space.items():
        check_key(key.split("."), source=f"{spec.source}: space")
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        for value in values or []:
            if param.type == "int":
                value = int(value)
            try:
                build_run_config(data, {key: value}, spec.source)
            except ConfigError as err:
                shown = json.dumps(value)
                raise ConfigError(f"{spec.source}: space.{key}: value {shown} is not valid for {key}: {err}") from None
