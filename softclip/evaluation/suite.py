"""Evaluation suites: the YAML schema (pydantic, ``extra=forbid``), variable substitution and path checks.

A suite file::

    name: paper
    roots: {IMAGENET_ROOT: /data/imagenet}   # defaults for ${VAR}; the environment wins
    batch_size: 256
    search: {exact_max_gallery: 1000000}
    benchmarks:
      imagenet:
        evaluator: zeroshot                  # a name in EVALUATORS
        path: ${IMAGENET_ROOT}               # relative paths resolve against the data root
        options: {split: val, templates: imagenet80}

Every error is a :class:`SuiteError` (a :class:`~softclip.config.ConfigError`) naming the file and the key; a
dataset path that does not exist is a :class:`~softclip.data.badsamples.DataError` naming the path and the
variable it came from.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from softclip.config import ConfigError
from softclip.data.badsamples import DataError
from softclip.evaluation.base import EVALUATORS, Options, list_evaluators
from softclip.evaluation.search import SearchConfig
from softclip.resources import resolve

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[a-z][a-z0-9_]*$"


class SuiteError(ConfigError):
    """A suite problem; the message names the file and the key."""


class BenchmarkSpec(BaseModel):
    """One benchmark of a suite."""

    model_config = ConfigDict(extra="forbid")

    evaluator: str = Field(description="evaluator name (zeroshot, retrieval, instance, copydays)")
    path: str = Field(description="dataset folder; relative to the data root; ${VAR} allowed")
    options: dict[str, Any] = Field(default_factory=dict, description="the evaluator's protocol options")


class SuiteSpec(BaseModel):
    """A whole suite file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    data_root: str | None = Field(None, description="root for relative paths when the caller gives none")
    roots: dict[str, str | None] = Field(default_factory=dict, description="defaults for ${VAR} substitution")
    batch_size: Annotated[int, Field(ge=1)] = 256
    workers: Annotated[int, Field(ge=0)] = 0
    sort_texts: bool = Field(False, description="encode texts shortest first (faster for ImageNet's 80,000 "
                             "prompts; changes scores in the last float digits, so off where committed numbers "
                             "must repeat)")  # fmt: skip
    max_bad_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    search: SearchConfig = Field(default_factory=SearchConfig)
    benchmarks: dict[Annotated[str, Field(pattern=_NAME)], BenchmarkSpec] = Field(min_length=1)


@dataclass
class Plan:
    """One benchmark ready to run: resolved dataset path and validated options."""

    name: str
    evaluator: str
    path: Path
    options: Options


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SuiteSpec
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if model is SuiteSpec and part == "benchmarks":
            model = BenchmarkSpec
            if parts:
                parts.pop(0)  # the benchmark name
            continue
        ann = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_errors(err: ValidationError, source: str, prefix: tuple[Any, ...] = (), keys_of=None) -> str:
    """One line per problem: ``source: key: what is wrong`` (unknown keys get the closest valid one)."""
    lines = []
    for item in err.errors():
        loc = tuple(prefix) + tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        key = ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden":
            valid = keys_of(item["loc"]) if keys_of else _valid_keys(loc)
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            tail = f"did you mean {hint[0]!r}?" if hint else f"valid keys here: {', '.join(valid)}"
            lines.append(f"{source}: unknown key {key!r}; {tail}")
        else:
            lines.append(f"{source}: {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def read_suite(suite: str | Path | dict[str, Any]) -> tuple[SuiteSpec, str]:
    """Validate a suite given as a YAML file or a mapping; returns (spec, source name for messages)."""
    if isinstance(suite, dict):
        data, source = suite, "<suite>"
    else:
        source, suite = str(suite), resolve(suite)  # eval/*.yaml outside a checkout: the shipped copy
        if not Path(suite).is_file():
            raise SuiteError(f"suite file not found: {suite}")
        try:
            data = yaml.safe_load(Path(suite).read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise SuiteError(f"{source}: invalid YAML: {err}") from None
        if not isinstance(data, dict):
            raise SuiteError(f"{source}: the top level must be a mapping")
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as err:
        raise SuiteError(format_errors(err, source)) from None
    known = list_evaluators()
    for name, bench in spec.benchmarks.items():
        if bench.evaluator not in known:
            hint = difflib.get_close_matches(bench.evaluator, known, n=1, cutoff=0.5)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SuiteError(f"{source}: benchmarks.{name}.evaluator={bench.evaluator!r} is not one of: "
                             f"{', '.join(known)}{extra}")  # fmt: skip
        parse_options(name, bench, source)
    return spec, source


def parse_options(name: str, bench: BenchmarkSpec, source: str) -> Options:
    """Validate a benchmark's options with its evaluator's schema; errors name ``benchmarks.NAME.options.KEY``."""
    schema = EVALUATORS.get(bench.evaluator).options
    try:
        return schema.model_validate(bench.options)
    except ValidationError as err:
        raise SuiteError(
            format_errors(err, source, ("benchmarks", name, "options"), keys_of=lambda _: list(schema.model_fields))
        ) from None


def substitute(text: str, roots: dict[str, str | None], where: str) -> tuple[str, dict[str, str]]:
    """Replace ``${VAR}`` from the environment, else the suite's ``roots``; returns (text, {VAR: value})."""
    used: dict[str, str] = {}

    def repl(m: re.Match) -> str:
        var = m.group(1)
        value = os.environ.get(var) or roots.get(var)
        if not value:
            raise SuiteError(f"{where} uses ${{{var}}}, which is not set: export {var}=/path/to/data or set "
                             f"roots.{var} in the suite file")  # fmt: skip
        used[var] = value
        return value

    return _VAR.sub(repl, text), used


def _substitute_options(value: Any, roots: dict[str, str | None], where: str) -> Any:
    if isinstance(value, str):
        return substitute(value, roots, where)[0]
    if isinstance(value, list):
        return [_substitute_options(v, roots, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute_options(v, roots, f"{where}.{k}") for k, v in value.items()}
    return value


def plan_suite(
    spec: SuiteSpec, source: str, data_root: str | Path | None, benchmarks: list[str] | None = None
) -> list[Plan]:
    """Resolve and check every selected benchmark before anything runs.

    Raises:
        SuiteError: an unknown benchmark name or an unset variable.
        DataError: a dataset path that does not exist (naming the path and its variable).
    """
    names = list(spec.benchmarks) if benchmarks is None else list(benchmarks)
    for n in names:
        if n not in spec.benchmarks:
            raise SuiteError(f"{source}: no benchmark {n!r}; the suite has: {', '.join(spec.benchmarks)}")
    root = Path(data_root if data_root is not None else spec.data_root or ".").expanduser()
    plans = []
    for name in names:
        bench = spec.benchmarks[name]
        where = f"{source}: benchmarks.{name}"
        text, used = substitute(bench.path, spec.roots, f"{where}.path")
        path = Path(text).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.exists():
            via = "; ".join(f"{v}={val!r} (environment variable {v} or roots.{v} in {source})"
                            for v, val in used.items())  # fmt: skip
            raise DataError(f"benchmark {name!r}: dataset path not found: {path}" + (f" — from {via}" if via else
                            f" — relative to the data root {root}"))  # fmt: skip
        options = _substitute_options(bench.options, spec.roots, f"{where}.options")
        opts = parse_options(name, bench.model_copy(update={"options": options}), source)
        plans.append(Plan(name, bench.evaluator, path, opts))
    return plans


# Errors a reader may raise on a malformed index that it does not turn into a DataError itself (a JSON that does
# not parse, an entry without "filename", a list where a mapping belongs).
_PARSE_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError)


def check_datasets(plans: list[Plan]) -> None:
    """Parse every planned dataset's index before anything trains: the Karpathy JSON and its split, the gnd
    pickle and its keys, the class folders and their lists, Copydays' blocks (each evaluator's ``load``: file
    lists and existence, no image is decoded); a dataset with nothing to evaluate is refused too.

    Raises:
        DataError: one line naming the benchmark, its path and what is wrong.
    """
    for plan in plans:
        evaluator = EVALUATORS.get(plan.evaluator)
        where = f"benchmark {plan.name!r} ({plan.path})"
        try:
            data = evaluator.load(plan.path, plan.options)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        except _PARSE_ERRORS as err:
            raise DataError(f"{where}: cannot be parsed: {type(err).__name__}: {err}") from None
        if evaluator.n_items(data) == 0:
            raise DataError(f"{where}: holds nothing to evaluate (0 items for the {plan.evaluator} evaluator)")


def preflight(suite: str | Path | dict[str, Any], data_root: str | Path | None) -> list[Plan]:
    """Read the suite, locate its datasets and parse their indexes (the trainer calls it before its first step,
    so a broken evaluation set fails a run before training, not after); returns the plans."""
    plans = plan_suite(*read_suite(suite), data_root)
    check_datasets(plans)
    return plans
