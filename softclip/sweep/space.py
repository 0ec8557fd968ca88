"""The search space of a sweep as Optuna sees it: conditional parameters drawn parents first
(:func:`suggest`, define-by-run) and the grid of the grid sampler (:func:`grid_space`)."""

from __future__ import annotations

import math
from typing import Any

import optuna

from softclip.config import ConfigError
from softclip.sweep_spec import ParamSpec


def ordered_params(space: dict[str, ParamSpec]) -> list[str]:
    """Parameter names with every ``when`` parent before its children, depth first (the order the sampler
    draws them in: stable, so a seeded sampler draws the same points); cycles raise."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in visiting:
            raise ConfigError(f"space: conditional parameters form a cycle: {' -> '.join((*path, name))}")
        if name not in order:
            visiting.add(name)
            for parent in space[name].allowed_parent_values():
                visit(parent, (*path, name))
            visiting.discard(name)
            order.append(name)

    for name in space:
        visit(name, ())
    return order


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Sample every parameter whose ``when`` conditions hold (parents first): ``{dotted.key: value}``."""
    chosen: dict[str, Any] = {}
    for name in ordered_params(space):
        p = space[name]
        if any(chosen.get(k, object()) not in allowed for k, allowed in p.allowed_parent_values().items()):
            continue
        if p.type == "categorical":
            chosen[name] = trial.suggest_categorical(name, p.choices)  # type: ignore[arg-type]
        elif p.type == "int":
            chosen[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)  # type: ignore[arg-type]
        else:
            chosen[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)  # type: ignore[arg-type]
    return chosen


def grid_values(name: str, param: ParamSpec) -> list[Any]:
    """The grid points of one parameter: categorical choices, or low..high by ``step``."""
    if param.type == "categorical":
        return list(param.choices or [])
    if param.step is None:
        raise ConfigError(f"space.{name}: the grid sampler needs 'choices' or a 'step' for {param.type} params")
    low, high, step = float(param.low), float(param.high), float(param.step)  # type: ignore[arg-type]
    values = [low + i * step for i in range(int(round((high - low) / step)) + 1) if low + i * step <= high + 1e-12]
    return [int(v) for v in values] if param.type == "int" else [round(v, 12) for v in values]


def grid_space(space: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """``search_space`` for optuna's GridSampler; conditional parameters are refused (no grid for them)."""
    conditional = [k for k, p in space.items() if p.when]
    if conditional:
        raise ConfigError(f"space: the grid sampler cannot handle conditional parameters ({', '.join(conditional)})")
    return {name: grid_values(name, param) for name, param in space.items()}


def grid_size(space: dict[str, ParamSpec]) -> int:
    return math.prod(len(v) for v in grid_space(space).values())
