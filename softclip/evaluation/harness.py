"""Run an evaluation suite: one JSON result per (run, benchmark), re-runs are no-ops unless forced.

``run_suite`` is the library call behind ``softclip eval``, the trainer's periodic evaluation, sweeps and
ablations; ``evaluate_checkpoint`` rebuilds a run's model from its ``config.yaml`` and checkpoint first.

Result file ``{out_dir}/{benchmark}.json``::

    {"run", "checkpoint", "benchmark", "task", "protocol": {evaluator, data, options, search, ...facts},
     "metrics": {"top1": ..., ...}, "config_hash", "git_sha", "n_items", "time_s", "suite", "created"}

``metrics`` keys are the evaluator's (unprefixed; the benchmark is its own field). :func:`flat_metrics` gives
the prefixed view ``{"zeroshot/top1": ...}`` for logs and sweep objectives. An existing file is reused when it
was made for the same checkpoint, config hash and protocol request; anything else (or ``force``) recomputes.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from softclip import runfiles
from softclip.atomic import write_json
from softclip.data.badsamples import BadSamples, DataError
from softclip.evaluation.base import EVALUATORS, EvalContext
from softclip.evaluation.embed import Embedder, file_digest, model_fingerprint
from softclip.evaluation.suite import Plan, SuiteSpec, plan_suite, read_suite

LOGGER = logging.getLogger("softclip.evaluation")
RESULT_KEYS = ("run", "checkpoint", "benchmark", "task", "protocol", "metrics", "config_hash", "git_sha",
               "n_items", "time_s")  # fmt: skip


def _version() -> str | None:
    try:
        return importlib.metadata.version("softclip")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return None


def flat_metrics(results: dict[str, dict[str, float]], sep: str = "/") -> dict[str, float]:
    """``{benchmark: {key: v}}`` -> ``{f"{benchmark}{sep}{key}": v}``."""
    return {f"{bench}{sep}{key}": value for bench, metrics in results.items() for key, value in metrics.items()}


def _request(plan: Plan, spec: SuiteSpec) -> dict[str, Any]:
    """What was asked for (compared to decide whether an existing result can be reused)."""
    return {
        "evaluator": plan.evaluator,
        "data": str(plan.path.resolve()),
        "options": plan.options.model_dump(mode="json"),
        "search": spec.search.model_dump(mode="json"),
    }


def _reusable(path: Path | None, request: dict[str, Any], checkpoint: str | None, config_hash: str | None):
    if path is None or not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (old.get("checkpoint") == checkpoint and old.get("config_hash") == config_hash
            and {k: old.get("protocol", {}).get(k) for k in request} == request)  # fmt: skip
    return old if same else None


def _check_metrics(name: str, metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key.replace("_", "").isalnum() or key.lower() != key:
            raise ValueError(f"benchmark {name!r}: metric key {key!r} is not flat snake_case")
        v = float(value)
        if math.isnan(v):
            raise ValueError(f"benchmark {name!r}: metric {key} is NaN")
        out[key] = v
    return out


def _run_benchmark(model: Any, plan: Plan, spec: SuiteSpec, embedder: Embedder, meta: dict[str, Any],
                   out_dir: Path | None, force: bool) -> dict[str, float]:  # fmt: skip
    evaluator = EVALUATORS.get(plan.evaluator)
    request = _request(plan, spec)
    target = out_dir / f"{plan.name}.json" if out_dir is not None else None
    old = None if force else _reusable(target, request, meta["checkpoint"], meta["config_hash"])
    if old is not None:
        LOGGER.info("%s: up to date (%s), skipped", plan.name, target)
        return {k: float(v) for k, v in old["metrics"].items()}
    t0 = time.perf_counter()
    data = evaluator.load(plan.path, plan.options)
    ctx = EvalContext(plan.options, embedder, spec.search)
    metrics = _check_metrics(plan.name, evaluator.evaluate(model, data, ctx))
    record = {
        "run": meta["run"], "checkpoint": meta["checkpoint"], "benchmark": plan.name, "task": evaluator.task,
        "protocol": {**request, **ctx.info}, "metrics": metrics, "config_hash": meta["config_hash"],
        "git_sha": meta["git_sha"], "n_items": int(evaluator.n_items(data)),
        "time_s": round(time.perf_counter() - t0, 3), "suite": spec.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "softclip_version": _version(),
    }  # fmt: skip
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, record)
    LOGGER.info("%s: %s (%.1f s)", plan.name, ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()), record["time_s"])
    return metrics


def _model_key(model: Any, checkpoint: str | None) -> str:
    """Cache key of the weights: the checkpoint's SHA-256 (from its record when present), else a fingerprint."""
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is None or not ckpt.is_file():
        return f"model-{model_fingerprint(model)}"
    record = ckpt.with_suffix(".json")
    try:
        sha = json.loads(record.read_text()).get("sha256") if record.is_file() else None
    except (OSError, ValueError):
        sha = None
    return f"ckpt-{sha[:16] if isinstance(sha, str) else file_digest(ckpt)}"


def run_suite(
    model: Any,
    preprocess: Callable,
    tokenizer: Callable,
    suite: str | Path | dict[str, Any],
    *,
    data_root: str | Path | None,
    out_dir: str | Path | None,
    run: str,
    checkpoint: str | None,
    config_hash: str | None,
    git_sha: str | None,
    benchmarks: list[str] | None = None,
    device: str = "cpu",
    force: bool = False,
    cache_dir: str | Path | None = None,
    batch_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on a suite's benchmarks.

    Args:
        model: duck-typed on ``encode_image`` / ``encode_text`` (and ``logit_scale`` for ``val_nce_loss``),
            already on ``device``.
        preprocess: PIL image -> float [3, H, W]; tokenizer: list[str] -> long [B, L].
        suite: a suite YAML path or an equivalent mapping.
        data_root: root for relative dataset paths (the run's ``data.root``); None: the suite's, else ``.``.
        out_dir: where the per-benchmark JSON files go; None writes nothing (and reuses nothing).
        run, checkpoint, config_hash, git_sha: provenance written into every result; ``checkpoint`` is a path
            or a tag (e.g. ``step_00000400``) and decides with the protocol whether a result is reusable.
        benchmarks: names to run (default: all of the suite's).
        device: where inputs go (the model's device).
        force: recompute even when an up-to-date result exists.
        cache_dir: embedding cache root (None: no cache).
        batch_size: overrides the suite's batch size.

    Returns:
        ``{benchmark: {metric: value}}``.
    """
    spec, source = read_suite(suite)
    plans = plan_suite(spec, source, data_root, benchmarks)
    model_key = _model_key(model, checkpoint) if cache_dir is not None else None
    embedder = Embedder(
        preprocess, tokenizer, device=device, batch_size=batch_size or spec.batch_size, workers=spec.workers,
        cache_dir=Path(cache_dir) if cache_dir is not None else None, model_key=model_key,
        bad=BadSamples(max_fraction=None), max_bad_fraction=spec.max_bad_fraction, sort_texts=spec.sort_texts,
    )  # fmt: skip
    meta = {"run": run, "checkpoint": checkpoint, "config_hash": config_hash, "git_sha": git_sha}
    out = Path(out_dir) if out_dir is not None else None
    results = {}
    for plan in plans:
        results[plan.name] = _run_benchmark(model, plan, spec, embedder, meta, out, force)
    return results


def _resolve_run(target: str | Path) -> tuple[Path, Path, bool]:
    """(run_dir, checkpoint file, whether it is the finished run's final checkpoint) for a run or a checkpoint.

    A finished run (``done.json``) is scored only from the checkpoint of the step ``done.json`` names: if that
    one is missing or damaged this fails naming it. The newest valid checkpoint stands in only for a run that
    has not finished.
    """
    from softclip.checkpoint import CheckpointError, latest_valid, verify_checkpoint

    p = Path(target)
    if p.is_file():
        run_dir = p.parent.parent if p.parent.name == runfiles.CHECKPOINTS else p.parent
        final = _final_checkpoint(run_dir)
        return run_dir, p, final is not None and final.resolve() == p.resolve()
    if not p.is_dir():
        raise DataError(f"run folder or checkpoint not found: {p}")
    final = _final_checkpoint(p)
    if final is not None:
        try:
            verify_checkpoint(final)
        except CheckpointError as err:
            raise DataError(f"the finished run's final checkpoint cannot be used: {err} (done.json names step "
                            f"{_done_step(p)}; restore that file or train again with --overwrite)") from None  # fmt: skip
        return p, final, True
    ckpt = latest_valid(runfiles.checkpoints_dir(p))
    if ckpt is None:
        raise DataError(f"no valid checkpoint in {runfiles.checkpoints_dir(p)}")
    return p, ckpt, False


def _done_step(run_dir: Path) -> int | None:
    path = run_dir / runfiles.DONE
    if not path.is_file():
        return None
    try:
        step = json.loads(path.read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path} is damaged ({type(err).__name__}: {err})") from None
    return int(step)


def _final_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint file of the step a finished run's ``done.json`` names; None for an unfinished run."""
    from softclip.checkpoint import checkpoint_path

    step = _done_step(run_dir)
    return None if step is None else checkpoint_path(runfiles.checkpoints_dir(run_dir), step)


def results_dir(run_dir: Path, ckpt: Path, final: bool) -> Path:
    """``RUN/eval`` for a finished run's final checkpoint; ``RUN/eval/step_<N>`` (or ``eval/<stem>``) else."""
    from softclip.checkpoint import step_of

    if final:
        return runfiles.eval_dir(run_dir)
    step = step_of(ckpt)
    return runfiles.eval_dir(run_dir) / (f"step_{step}" if step is not None else ckpt.stem)


EVAL_SKIPS = ("roi.", "teacher.")  # parts of a trained SoftCLIPModel that evaluation does not build


def load_run_model(run_dir: Path, ckpt: Path, device: str) -> tuple[Any, Callable, Callable, Any]:
    """Rebuild a run's model from ``config.yaml`` and load the checkpoint's weights.

    The ROI aggregator and the EMA teacher are not built: evaluation only uses the student's two towers, so
    ``roi.*`` and ``teacher.*`` weights are skipped; every other parameter must match (the sigmoid loss's bias
    included).

    Returns:
        (model on ``device`` in eval mode, preprocess_val, tokenizer, config).
    """
    from softclip.checkpoint import CheckpointError, load_checkpoint, weights_mismatch
    from softclip.config import load_config
    from softclip.models import build_model

    cfg_path = run_dir / runfiles.CONFIG
    if not cfg_path.is_file():
        raise DataError(f"run config not found: {cfg_path}")
    cfg = load_config(cfg_path)
    # no ROI aggregator, no teacher: eval uses the towers
    model, _, preprocess, tokenizer = build_model(cfg.model, loss=cfg.loss, teacher=False)
    try:
        state = load_checkpoint(ckpt, verify=ckpt.with_suffix(".json").is_file())
    except CheckpointError as err:
        raise DataError(str(err)) from None
    weights = state.get("model", state) if isinstance(state, dict) else state
    weights = {k: v for k, v in weights.items() if not k.startswith(EVAL_SKIPS)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(EVAL_SKIPS)}
    mismatch = weights_mismatch(expected, weights)
    if mismatch is not None:
        saved = state.get("info", {}).get("config_hash") if isinstance(state, dict) else None
        hint = (f"; {cfg_path} is not the config it was trained with (config hash {cfg.hash()} vs {saved})"
                if saved and saved != cfg.hash() else "")  # fmt: skip
        raise DataError(f"{ckpt} does not fit model.name={cfg.model.name!r} of {cfg_path}: {mismatch}{hint}")
    model.load_state_dict(weights, strict=False)
    return model.to(device).eval(), preprocess, tokenizer, cfg


def evaluate_checkpoint(
    run_dir_or_checkpoint: str | Path,
    suite: str | Path | dict[str, Any] | None = None,
    force: bool = False,
    *,
    data_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    benchmarks: list[str] | None = None,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate a trained run (its final checkpoint; the newest valid one while unfinished) or a checkpoint file.

    Args:
        run_dir_or_checkpoint: ``runs/NAME`` or ``runs/NAME/checkpoints/step_XXXXXXXX.pt``.
        suite: suite YAML (default: the run's ``eval.suite``).
        force: recompute existing results.
        data_root: default the run's ``data.root``; out_dir: default ``RUN/eval`` for a finished run's final
            checkpoint, ``RUN/eval/step_<N>`` for any other (so it never replaces the run's own results).
        benchmarks: subset of the suite's benchmarks; device: default CUDA when available.

    Returns:
        ``{benchmark: {metric: value}}`` (results also written to ``out_dir``).
    """
    run_dir, ckpt, final = _resolve_run(run_dir_or_checkpoint)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, preprocess, tokenizer, cfg = load_run_model(run_dir, ckpt, device)
    meta_path = run_dir / runfiles.META
    git_sha = json.loads(meta_path.read_text()).get("git_sha") if meta_path.is_file() else None
    out = Path(out_dir) if out_dir is not None else results_dir(run_dir, ckpt, final)
    return run_suite(
        model, preprocess, tokenizer, suite if suite is not None else cfg.eval.suite,
        data_root=data_root if data_root is not None else cfg.data.root, out_dir=out, run=run_dir.name,
        checkpoint=str(ckpt.resolve()), config_hash=cfg.hash(), git_sha=git_sha, benchmarks=benchmarks,
        device=device, force=force, cache_dir=out / "cache" if cfg.eval.cache else None,
        batch_size=cfg.eval.batch_size,
    )  # fmt: skip
