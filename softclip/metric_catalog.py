"""The metric catalog (``softclip/metrics.yaml``): known ``benchmark/metric`` keys, equivalence margins with their
reasons, planning sds and aliases. A leaf module (yaml only), so config validation may import it."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

CATALOG = Path(__file__).with_name("metrics.yaml")


@dataclass(frozen=True)
class MetricInfo:
    """What the catalog says of one key: margin ±m (NaN: none), its reason, pilot sd (NaN: none), alias."""

    key: str
    margin: float = math.nan
    reason: str = ""
    pilot_sd: float = math.nan
    alias_of: str | None = None


@dataclass(frozen=True)
class Catalog:
    benchmarks: dict[str, str]
    evaluators: dict[str, list[str]]
    metrics: dict[str, MetricInfo]

    def is_known(self, key: str) -> bool:
        """True for ``benchmark/metric`` with a catalogued benchmark and a metric its evaluator writes."""
        bench, _, metric = key.partition("/")
        evaluator = self.benchmarks.get(bench)
        return evaluator is not None and metric in self.evaluators.get(evaluator, [])

    def is_diagnostic(self, key: str) -> bool:
        """True for the trainer's diagnostics (``target/...``): reported, never an outcome to test."""
        return self.benchmarks.get(key.partition("/")[0]) == "target"

    def known_keys(self) -> list[str]:
        return sorted(f"{b}/{m}" for b, ev in self.benchmarks.items() for m in self.evaluators.get(ev, []))

    def info(self, key: str) -> MetricInfo:
        return self.metrics.get(key, MetricInfo(key))

    def closest(self, key: str, extra: list[str] | None = None) -> str | None:
        """The known key nearest to ``key`` (for "did you mean"), or None."""
        hits = difflib.get_close_matches(key, sorted({*self.known_keys(), *(extra or [])}), n=1, cutoff=0.5)
        return hits[0] if hits else None

    def unknown_message(self, key: str, where: str) -> str:
        hint = self.closest(key)
        return f"{where}: unknown metric {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")


def _info(key: str, raw: dict) -> MetricInfo:
    num = lambda k: float(raw[k]) if raw.get(k) is not None else math.nan  # noqa: E731
    return MetricInfo(key, num("margin"), str(raw.get("reason", "")).strip(), num("pilot_sd"), raw.get("alias_of"))


@lru_cache(maxsize=4)
def load_catalog(path: str | Path = CATALOG) -> Catalog:
    """Read and check the catalog: every entry with a margin has a reason, every entry is a known key."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    cat = Catalog(dict(data["benchmarks"]), {k: list(v) for k, v in data["evaluators"].items()},
                  {k: _info(k, v or {}) for k, v in (data.get("metrics") or {}).items()})  # fmt: skip
    for key, info in cat.metrics.items():
        if not cat.is_known(key) or (info.alias_of and not cat.is_known(info.alias_of)):
            raise ValueError(f"{path}: metrics.{key}: not a known benchmark/metric key")
        if math.isfinite(info.margin) and (info.margin <= 0 or not info.reason):
            raise ValueError(f"{path}: metrics.{key}: a margin must be > 0 and come with its reason")
    return cat


def alias_of(key: str) -> str | None:
    """The key ``key`` is counted as (None: itself)."""
    return load_catalog().info(key).alias_of
