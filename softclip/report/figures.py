"""Report figures: seaborn on bare matplotlib ``Figure`` objects (Agg rendering to PNG, no pyplot state).

Each builder in :data:`FIGURES` gets the :class:`FigureData` and the output folder and returns the
``(ablation, path)`` pairs it wrote; nothing when its data is absent. Intervals are over seeds.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from softclip import atomic
from softclip.registry import Registry
from softclip.report.calibration import CALIBRATED, calibration_table
from softclip.report.stats import t_interval

HEATMAP_KEYS = ("loss.beta", "loss.tau")
NOISE_FACTORS = ("noise", "data.synth.noise")
HUE_FACTORS = ("method",)
RECALL_KS = (1, 5, 10)

Written = list[tuple[str, Path]]


@dataclass
class FigureData:
    """What the builders draw from: result frame, summary, curves, per-run configs, headline metric keys."""

    frame: pd.DataFrame
    curves: pd.DataFrame
    configs: pd.DataFrame
    metrics: Sequence[str]
    summary: pd.DataFrame | None = None

    def headline(self, ablation: str) -> str | None:
        """The first of ``metrics`` the ablation has, else its first metric key."""
        keys = self.frame.loc[self.frame["ablation"] == ablation, "key"]
        present = set(keys)
        return next((m for m in self.metrics if m in present), keys.iloc[0] if len(keys) else None)

    def ablations(self) -> list[str]:
        return sorted(self.frame["ablation"].unique())

    def labels(self, ablation: str) -> list[str]:
        """Variant labels of ``ablation`` in table order."""
        part = self.frame[self.frame["ablation"] == ablation]
        return list(dict.fromkeys(part["label"]))


FIGURES: Registry[Callable[[FigureData, Path], Written]] = Registry("report.figure")


def slug(name: str) -> str:
    """A file-name-safe form of ``name``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(name)).strip("_") or "_"


def save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to PNG in memory and write it atomically (no timestamp in the file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_bytes(path, buf.getvalue())


CHARS_PER_INCH = 9  # of a 10-pt title at 100 dpi


def set_title(ax, text: str, width: float) -> None:
    """A title wrapped to the ``width`` (inches) of its axes, so that it is never cut at the figure's edge."""
    ax.set_title("\n".join(textwrap.wrap(text, max(16, int(width * CHARS_PER_INCH)))), fontsize=10)


def new_figure(width: float = 6.0, height: float = 4.0, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, height), layout="tight")  # laid out at the one draw savefig makes
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


@FIGURES.register("heatmap")
def heatmap(data: FigureData, out: Path) -> Written:
    """β×τ heatmap of the headline metric (mean over seeds) for ablations whose runs vary both."""
    written: Written = []
    cfg = data.configs
    if cfg.empty or not set(HEATMAP_KEYS) <= set(cfg.columns):
        return written
    for ablation in data.ablations():
        part = cfg[cfg["ablation"] == ablation].dropna(subset=list(HEATMAP_KEYS))
        if part.empty or min(part[k].nunique() for k in HEATMAP_KEYS) < 2:
            continue
        metric = data.headline(ablation)
        rows = data.frame[(data.frame["ablation"] == ablation) & (data.frame["key"] == metric)]
        merged = rows[["run_dir", "value"]].merge(part[["run_dir", *HEATMAP_KEYS]], on="run_dir")
        grid = merged.pivot_table(index=HEATMAP_KEYS[0], columns=HEATMAP_KEYS[1], values="value", aggfunc="mean")
        if grid.empty:
            continue
        fig, (ax,) = new_figure(5.5, 4.5)
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": metric})
        ax.set(xlabel="τ (loss.tau)", ylabel="β (loss.beta)")
        set_title(ax, f"{ablation}: {metric}, mean over seeds", 4.5)
        written.append((ablation, save(fig, out / f"heatmap_{slug(ablation)}.png")))
    return written


def aggregate(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: n, mean of ``value`` and its 95% Student-t interval over seeds (no bar for one seed)."""
    out = []
    for keys, group in rows.groupby(by, sort=False):
        values = group["value"].to_numpy(float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        mean = float(values.mean())
        lo, hi = t_interval(values) if values.size > 1 else (mean, mean)
        out.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True)),
                    "n": values.size, "mean": mean, "lo": lo, "hi": hi})  # fmt: skip
    return pd.DataFrame(out, columns=[*by, "n", "mean", "lo", "hi"])


def _yerr(agg: pd.DataFrame) -> np.ndarray:
    return np.vstack([agg["mean"] - agg["lo"], agg["hi"] - agg["mean"]])


def _lines(ax, agg: pd.DataFrame, x: str, hue: str, order: Sequence[object]) -> None:
    """One line with 95% interval bars per ``hue`` level, in ``order``."""
    palette = sns.color_palette("deep", max(1, len(order)))
    for colour, level in zip(palette, order, strict=True):
        sub = agg[agg[hue] == level].sort_values(x)
        if not sub.empty:
            ax.errorbar(sub[x], sub["mean"], yerr=_yerr(sub), marker="o", capsize=3, color=colour, label=str(level))
    ax.legend(title=hue, fontsize="small")


@FIGURES.register("bars")
def bars(data: FigureData, out: Path) -> Written:
    """Headline metric per variant: mean with its 95% Student-t interval over seeds, one figure per ablation."""
    written: Written = []
    for ablation in data.ablations():
        metric = data.headline(ablation)
        rows = data.frame[(data.frame["ablation"] == ablation) & (data.frame["key"] == metric)]
        agg = aggregate(rows, ["label"]).set_index("label")
        agg = agg.reindex([lab for lab in data.labels(ablation) if lab in agg.index]).reset_index()
        if agg.empty:
            continue
        width = max(4.0, 0.9 * len(agg) + 2)
        fig, (ax,) = new_figure(width, 4.0)
        x = np.arange(len(agg))
        ax.bar(x, agg["mean"], color=sns.color_palette("deep", 1)[0])
        ax.errorbar(x, agg["mean"], yerr=_yerr(agg), fmt="none", ecolor="black", capsize=4)
        ax.set_xticks(x, agg["label"], rotation=30, ha="right")
        ax.set(ylabel=metric)
        set_title(ax, f"{ablation}: {metric} (mean, 95% t-interval over seeds)", width - 1.0)
        written.append((ablation, save(fig, out / f"bars_{slug(ablation)}.png")))
    return written


def _first_factor(part: pd.DataFrame, names: Sequence[str], min_levels: int) -> str | None:
    return next((c for c in names if c in part.columns and part[c].dropna().nunique() >= min_levels), None)


@FIGURES.register("noise")
def noise_curves(data: FigureData, out: Path) -> Written:
    """Headline metric against the ``noise`` factor, one line per ``method`` (else per variant), 95% t-interval bars."""
    written: Written = []
    for ablation in data.ablations():
        metric = data.headline(ablation)
        part = data.frame[(data.frame["ablation"] == ablation) & (data.frame["key"] == metric)]
        x = _first_factor(part, NOISE_FACTORS, 2)
        if x is None:
            continue
        hue = _first_factor(part, HUE_FACTORS, 1) or "label"
        part = part.assign(**{x: pd.to_numeric(part[x], errors="coerce")}).dropna(subset=[x, hue])
        agg = aggregate(part, [hue, x])
        fig, (ax,) = new_figure()
        _lines(ax, agg, x, hue, list(dict.fromkeys(part[hue])))
        ax.set(xlabel=x, ylabel=metric)
        set_title(ax, f"{ablation}: {metric} vs {x} (95% t-interval over seeds)", 5.0)
        written.append((ablation, save(fig, out / f"noise_{slug(ablation)}.png")))
    return written


def _curve(data: FigureData, out: Path, kind: str, key_of: Callable[[str], str | None], prefix: str) -> Written:
    """Mean ± sd over seeds of one ``metrics.jsonl`` key against step, one line per variant."""
    written: Written = []
    if data.curves.empty:
        return written
    for ablation in data.ablations():
        key = key_of(ablation)
        part = data.curves[(data.curves["ablation"] == ablation) & (data.curves["kind"] == kind)
                           & (data.curves["key"] == key)]  # fmt: skip
        if part.empty:
            continue
        stats = part.groupby(["label", "step"], sort=False)["value"].agg(["mean", "std"]).reset_index()
        labels = [lab for lab in data.labels(ablation) if lab in set(stats["label"])]
        fig, (ax,) = new_figure(7.0, 4.0)
        for colour, label in zip(sns.color_palette("deep", len(labels)), labels, strict=True):
            sub = stats[stats["label"] == label].sort_values("step")
            ax.plot(sub["step"], sub["mean"], color=colour, label=label, marker="o" if len(sub) < 20 else None)
            sd = sub["std"].fillna(0.0)
            ax.fill_between(sub["step"], sub["mean"] - sd, sub["mean"] + sd, color=colour, alpha=0.2, linewidth=0)
        ax.legend(fontsize="small")
        ax.set(xlabel="step", ylabel=key)
        set_title(ax, f"{ablation}: {key} (mean ± sd over seeds)", 6.0)
        written.append((ablation, save(fig, out / f"{prefix}_{slug(ablation)}.png")))
    return written


@FIGURES.register("training")
def training_curves(data: FigureData, out: Path) -> Written:
    """Training loss against step per variant (mean ± sd over seeds) from ``metrics.jsonl``."""
    return _curve(data, out, "train", lambda _: "loss", "train_loss")


@FIGURES.register("eval_curves")
def eval_curves(data: FigureData, out: Path) -> Written:
    """The headline metric at each periodic evaluation, per variant, from ``metrics.jsonl``."""
    return _curve(data, out, "eval", data.headline, "eval")


@FIGURES.register("recall")
def recall_at_k(data: FigureData, out: Path) -> Written:
    """Recall@k (k = 1, 5, 10) for image→text and text→image retrieval, per variant, 95% t-interval over seeds."""
    written: Written = []
    keys = {f"retrieval/{d}_r{k}": (d, k) for d in ("i2t", "t2i") for k in RECALL_KS}
    for ablation in data.ablations():
        part = data.frame[(data.frame["ablation"] == ablation) & data.frame["key"].isin(list(keys))]
        if part.empty:
            continue
        part = part.assign(direction=part["key"].map(lambda k: keys[k][0]), k=part["key"].map(lambda k: keys[k][1]))
        agg = aggregate(part, ["direction", "label", "k"])
        labels = [lab for lab in data.labels(ablation) if lab in set(agg["label"])]
        fig, axes = new_figure(5.0, 4.0, ncols=2)
        for ax, direction in zip(axes, ("i2t", "t2i"), strict=True):
            _lines(ax, agg[agg["direction"] == direction], "k", "label", labels)
            ax.set(xscale="log", xlabel="k", ylabel="recall@k (%)")
            set_title(ax, f"{ablation}: {direction} (95% t-interval)", 4.0)
            ax.set_xticks(list(RECALL_KS), [str(k) for k in RECALL_KS])
            ax.minorticks_off()
        written.append((ablation, save(fig, out / f"recall_{slug(ablation)}.png")))
    return written


@FIGURES.register("calibration")
def calibration(data: FigureData, out: Path) -> Written:
    """Δ vs CLIP (95% interval) against measured target precision: the oracle's knob as a line, every other
    method as a labelled point at its own measured precision; one panel per calibrated metric."""
    table = calibration_table(data.frame, data.summary) if data.summary is not None else pd.DataFrame()
    written: Written = []
    for ablation, part in table.groupby("ablation", sort=True) if not table.empty else []:
        fig, axes = new_figure(5.0, 4.0, ncols=len(CALIBRATED))
        for ax, key in zip(axes, CALIBRATED, strict=True):
            rows = part[part["key"] == key]
            curve = rows[rows["on_curve"]].sort_values("precision")
            yerr = lambda r: np.vstack([r["delta"] - r["ci_low"], r["ci_high"] - r["delta"]])  # noqa: E731
            ax.errorbar(curve["precision"], curve["delta"], yerr=yerr(curve), marker="o", capsize=3, color="black",
                        label="oracle at its precision knob")  # fmt: skip
            others = rows[~rows["on_curve"]]
            for colour, r in zip(sns.color_palette("deep", max(1, len(others))), others.to_dict("records"), strict=False):
                ax.errorbar([r["precision"]], [r["delta"]], yerr=[[r["delta"] - r["ci_low"]], [r["ci_high"] - r["delta"]]],
                            marker="s", capsize=3, color=colour, linestyle="none", label=r["label"])  # fmt: skip
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set(xlabel="measured target precision", ylabel=f"Δ {key} vs baseline")
            set_title(ax, f"{ablation}: Δ {key} (95% interval) vs target precision", 4.0)
            ax.legend(fontsize="x-small")
        written.append((ablation, save(fig, out / f"calibration_{slug(ablation)}.png")))
    return written


def build_figures(data: FigureData, out: Path, names: Sequence[str] | None = None) -> Written:
    """Run the named builders (default: all, in registry order) and collect what they wrote."""
    written: Written = []
    for name in names or FIGURES.names():
        written.extend(FIGURES.get(name)(data, out))
    return written
