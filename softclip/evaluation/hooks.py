"""The trainer's periodic evaluation hook built from a run config (a few benchmarks on the live model)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from softclip.config import Config


def periodic_evaluator(
    cfg: Config,
    benchmarks: Sequence[str] | None = None,
    report: Callable[[int, dict[str, float]], Any] | None = None,
) -> Callable[[Any, int], dict[str, float]]:
    """Return ``evaluate(model, step) -> {"benchmark/metric": value}`` for ``train.eval_every``.

    Runs ``benchmarks`` (default: every benchmark of ``eval.periodic_suite`` when set, else ``zeroshot`` and
    ``retrieval`` of ``eval.suite``; the full suite runs once after training) and writes nothing;
    the trainer logs the values to metrics.jsonl and tracks the best checkpoint by ``train.best_metric``.
    ``report(step, metrics)``, when given, also receives them (a sweep trial's pruner).
    """
    from softclip.evaluation.harness import flat_metrics, run_suite
    from softclip.models import build_model

    _, _, preprocess, tokenizer = build_model(cfg.model)
    suite = periodic_suite(cfg)
    if benchmarks is None:
        benchmarks = None if cfg.eval.periodic_suite else ("zeroshot", "retrieval")
    names = None if benchmarks is None else list(benchmarks)

    def evaluate(model: Any, step: int) -> dict[str, float]:
        device = str(next(model.parameters()).device)
        results = run_suite(
            model, preprocess, tokenizer, suite, data_root=cfg.data.root, out_dir=None, run=cfg.name,
            checkpoint=f"step_{step:08d}", config_hash=cfg.hash(), git_sha=None, benchmarks=names,
            device=device, batch_size=cfg.eval.batch_size,
        )  # fmt: skip
        metrics = flat_metrics(results)
        if report is not None:
            report(step, metrics)
        return metrics

    return evaluate


def periodic_suite(cfg: Config) -> str:
    """The suite the trainer's periodic evaluation runs: ``eval.periodic_suite``, else ``eval.suite``."""
    return cfg.eval.periodic_suite or cfg.eval.suite
