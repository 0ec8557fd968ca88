"""``softclip report``: tables, figures and an index page from run folders' result JSON.

Public API::

    build_report(paths, out, *, title=..., baseline=None, metrics=None, command=None, machine=None,
                 n_boot=10000, paper_reference=DEFAULT_REFERENCE, generated=None) -> Path   # report.md
    collect(paths, *, baseline=None) -> DataFrame        # tidy: ablation, variant, label, seed, run, benchmark,
                                                         #       metric, value, order, key, baseline, run_dir, factors
    curves(paths) -> DataFrame                           # metrics.jsonl: kind, step, key, value, ...
    summarize(frame, baselines=None, *, n_boot=10000, seed=0, level=0.95) -> DataFrame  # Δ per variant vs
                                                         #   its baseline (frame column, {ablation: v} or
                                                         #   {(ablation, variant): v})
    ReportError                                          # bad input (a ValueError)
"""

from softclip.report.discover import ReportError, load_runs
from softclip.report.frame import collect, config_values, curves
from softclip.report.index import build_report
from softclip.report.stats import summarize

__all__ = ["ReportError", "build_report", "collect", "config_values", "curves", "load_runs", "summarize"]
