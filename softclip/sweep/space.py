"""Search spaces: define-by-run suggestion with conditional parameters, and the grid for GridSampler."""

from __future__ import annotations

import math
from typing import Any

import optuna

from softclip.config import ConfigError
from softclip.sweep.spec import ParamSpec


def ordered_params(space: dict[str, ParamSpec]) -> list[str]:
    """Parameter names with every ``when`` parent before its children (stable otherwise); cycles raise."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ConfigError(f"space: conditional parameters form a cycle: {' -> '.join((*path, name))}")
        state[name] = "visiting"
        for parent in space[name].allowed_parent_values():
            visit(parent, (*path, name))
        state[name] = "done"
        order.append(name)

    for name in space:
        visit(name, ())
    return order


def is_active(param: ParamSpec, chosen: dict[str, Any]) -> bool:
    """True when every ``when`` condition holds for the values chosen so far (a missing parent: inactive)."""
    for parent, allowed in param.allowed_parent_values().items():
        if parent not in chosen or chosen[parent] not in allowed:
            return False
    return True


def suggest_one(trial: optuna.Trial, name: str, param: ParamSpec) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, param.choices)  # type: ignore[arg-type]
    if param.type == "int":
        step = int(param.step) if param.step else 1
        return trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)  # type: ignore[arg-type]
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)  # type: ignore[arg-type]


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Sample every active parameter (parents first); returns ``{dotted.key: value}`` of the active ones."""
    chosen: dict[str, Any] = {}
    for name in ordered_params(space):
        if is_active(space[name], chosen):
            chosen[name] = suggest_one(trial, name, space[name])
    return chosen


def grid_values(name: str, param: ParamSpec) -> list[Any]:
    """The grid points of one parameter: categorical choices, or low..high by ``step``."""
    if param.type == "categorical":
        return list(param.choices or [])
    if param.step is None:
        raise ConfigError(f"space.{name}: the grid sampler needs 'choices' or a 'step' for {param.type} params")
    low, high, step = float(param.low), float(param.high), float(param.step)  # type: ignore[arg-type]
    count = int(round((high - low) / step)) + 1
    values = [low + i * step for i in range(count) if low + i * step <= high + 1e-12]
    return [int(v) for v in values] if param.type == "int" else [round(v, 12) for v in values]


def grid_space(space: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """``search_space`` for optuna's GridSampler; conditional parameters are refused (no grid for them)."""
    conditional = [k for k, p in space.items() if p.when]
    if conditional:
        raise ConfigError(f"space: the grid sampler cannot handle conditional parameters ({', '.join(conditional)})")
    return {name: grid_values(name, param) for name, param in space.items()}


def grid_size(space: dict[str, ParamSpec]) -> int:
    return math.prod(len(v) for v in grid_space(space).values())
