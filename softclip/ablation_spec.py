"""The ablation file's schema (:class:`AblationSpec`); :mod:`softclip.ablate` documents the format, loads
files into it, plans and runs the jobs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from softclip.config import parse_override
from softclip.metric_catalog import load_catalog
from softclip.schema import LauncherOverrides, Seeds


class PrimaryFamily(BaseModel):
    """The ablation's pre-declared primary family (declared before results exist; Holm-corrected in the report).

    ``contrasts``: ``"A"`` (variant A vs its baseline), ``"A:B"`` (A − B paired on seeds), or ``"all"`` (every
    variant that is not its own baseline, vs its baseline). ``metrics``: ``benchmark/metric`` keys of
    ``softclip/metrics.yaml``.
    """

    model_config = ConfigDict(extra="forbid")

    contrasts: list[str] | Literal["all"]
    metrics: list[str] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        catalog = load_catalog()
        for key in v:
            if not catalog.is_known(key):
                raise ValueError(catalog.unknown_message(key, "primary.metrics"))
            alias = catalog.info(key).alias_of
            if alias:
                raise ValueError(f"primary.metrics: {key!r} is counted as {alias!r} (they coincide); name {alias!r}")
        if len(set(v)) < len(v):
            raise ValueError(f"primary.metrics: a metric is named twice: {v}")
        return v

    @field_validator("contrasts")
    @classmethod
    def _some_contrasts(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("primary.contrasts: name at least one contrast, or `all`")
        return v


class AblationSpec(BaseModel):
    """An ablation file after its profile overlay."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    base: str = Field(description="run config, relative to the ablation file")
    overrides: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]]
    exclude: list[str] = Field(default_factory=list,
                               description="variants left out (e.g. in a profile whose data cannot run them)")  # fmt: skip
    baseline: str | None = Field(None, description="variant the others are compared with (the CLIP baseline)")
    compare_within: list[str] = Field(default_factory=list,
                                      description="factors on which a variant's baseline matches the variant")  # fmt: skip
    labels: dict[str, str] = Field(default_factory=dict)
    factors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    primary: PrimaryFamily | None = Field(None, description="pre-declared primary contrasts x metrics (Holm)")
    seeds: Seeds = Field(default_factory=lambda: [0])
    output_dir: str = "runs/ablations"
    launcher: LauncherOverrides = Field(default_factory=LauncherOverrides)  # type: ignore[valid-type]
    source: str = "<ablation>"
    profile: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_excluded(cls, data: Any) -> Any:
        """Remove the ``exclude``d variants (and their labels and factors) before anything else sees them."""
        if not isinstance(data, dict) or not data.get("exclude"):
            return data
        names = list(data["exclude"])
        variants = dict(data.get("variants") or {})
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise ValueError(f"exclude names unknown variants {unknown}; variants: {list(variants)}")
        drop = lambda m: {k: v for k, v in (m or {}).items() if k not in names}  # noqa: E731
        out = {**data, "variants": drop(variants), "labels": drop(data.get("labels")), "factors": drop(data.get("factors"))}
        primary = data.get("primary")
        if isinstance(primary, dict) and isinstance(primary.get("contrasts"), list):  # contrasts of excluded variants go
            kept = [c for c in primary["contrasts"] if not set(str(c).split(":")) & set(names)]
            out["primary"] = {**primary, "contrasts": kept or "all"}
        return out

    @field_validator("variants", mode="before")
    @classmethod
    def _variant_lists(cls, v: Any) -> Any:
        """Accept ``variant: [key=value, ...]`` as well as mappings; ``variant: {}`` or null = the base."""
        if not isinstance(v, dict):
            return v
        out = {}
        for name, overrides in v.items():
            if isinstance(overrides, list):
                pairs = [parse_override(str(text)) for text in overrides]
                overrides = {".".join(parts): value for parts, value in pairs}
            out[name] = overrides or {}
        return out

    @field_validator("variants")
    @classmethod
    def _some(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:
            raise ValueError("needs at least one variant")
        bad = [k for k in v if not k.replace("-", "_").replace("+", "_").replace(".", "_").isidentifier()]
        if bad:
            raise ValueError(f"variant names become folder names; use letters, digits, _ - + . ({bad})")
        return v

    @model_validator(mode="after")
    def _known_variants(self) -> AblationSpec:
        named = {"baseline": [self.baseline] if self.baseline else [], "labels": list(self.labels),
                 "factors": list(self.factors)}  # fmt: skip
        for key, names in named.items():
            unknown = [n for n in names if n not in self.variants]
            if unknown:
                raise ValueError(f"{key} names unknown variants {unknown}; variants: {list(self.variants)}")
        return self

    @model_validator(mode="after")
    def _per_variant_baselines(self) -> AblationSpec:
        """``compare_within`` needs a baseline, those factors on every variant and exactly one match per variant."""
        if self.compare_within and not self.baseline:
            raise ValueError(f"compare_within {self.compare_within} needs a baseline variant")
        for variant in self.variants if self.compare_within else []:
            own = self.factors.get(variant, {})
            lacking = [f for f in self.compare_within if f not in own]
            matches = [] if lacking else self._baseline_matches(variant)
            if lacking or len(matches) != 1:
                wanted = ", ".join(f"{k}={v!r}" for k, v in self._wanted_factors(variant).items())
                why = f"lacks factor(s) {lacking}" if lacking else f"needs exactly one baseline variant with {wanted}"
                found = "" if lacking else f"; found {matches or 'none'}"
                factors = ", ".join(f"{k}={v!r}" for k, v in own.items()) or "no factors"
                raise ValueError(f"compare_within {self.compare_within}: variant {variant!r} ({factors}) {why}{found}")
        return self

    @model_validator(mode="after")
    def _known_contrasts(self) -> AblationSpec:
        self.primary_pairs()  # every primary contrast names variants of this file and has a reference
        return self

    def primary_pairs(self) -> list[tuple[str, str]]:
        """The primary contrasts as (variant, reference) pairs, in declaration order.

        Raises:
            ValueError: a contrast names an unknown variant, or a variant without a baseline of its own.
        """
        if self.primary is None:
            return []
        if self.primary.contrasts == "all":
            pairs = [(v, self.baseline_of(v)) for v in self.variants]
            return [(v, b) for v, b in pairs if b is not None and b != v]
        out = []
        for text in self.primary.contrasts:
            names = [n.strip() for n in str(text).split(":")]
            unknown = [n for n in names if n not in self.variants]
            if len(names) > 2 or unknown or not all(names):
                raise ValueError(f"primary.contrasts: {text!r} names unknown variant(s) {unknown or names}; "
                                 f"variants: {list(self.variants)}")  # fmt: skip
            ref = names[1] if len(names) == 2 else self.baseline_of(names[0])
            if ref is None or ref == names[0]:
                raise ValueError(f"primary.contrasts: {text!r} has no baseline to compare with; write 'A:B'")
            out.append((names[0], ref))
        return out

    def _wanted_factors(self, variant: str) -> dict[str, Any]:
        """The factors ``variant``'s baseline must have: its own on ``compare_within``, the baseline's elsewhere."""
        names = sorted({k for f in self.factors.values() for k in f} | set(self.compare_within))
        own, base = self.factors.get(variant, {}), self.factors.get(self.baseline or "", {})
        return {k: own.get(k) if k in self.compare_within else base.get(k) for k in names}

    def _baseline_matches(self, variant: str) -> list[str]:
        wanted = self._wanted_factors(variant).items()
        return [v for v in self.variants if all(self.factors.get(v, {}).get(k) == x for k, x in wanted)]

    def baseline_of(self, variant: str) -> str | None:
        """The variant ``variant`` is compared with: ``baseline``, or with ``compare_within`` the variant equal to
        it on those factors and to ``baseline`` on every other factor. Raises KeyError for an unknown variant."""
        if variant not in self.variants:
            raise KeyError(f"unknown variant {variant!r}; variants: {list(self.variants)}")
        if not self.compare_within:
            return self.baseline
        (match,) = self._baseline_matches(variant)  # exactly one: checked at validation
        return match
