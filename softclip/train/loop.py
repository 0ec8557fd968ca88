"""The training loop: steps, logging, evaluation, checkpoints, non-finite handling and resume.

Order at the end of optimiser step ``s`` (1-based count of steps taken): log (every ``log_every`` and at the
end), evaluate (every ``eval_every`` and at the end; may write ``best.pt``), checkpoint (every ``ckpt_every``
and at the end). Everything random at a step is seeded from (seed, rank, step) and the data position is part
of the checkpoint, so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from softclip import checkpoint as ckpt
from softclip import runfiles
from softclip.atomic import write_json
from softclip.config import Config
from softclip.train.dist import DistEnv, all_reduce, barrier, gather_objects
from softclip.train.errors import NonFiniteLossError, SignalReceived, TrainingError
from softclip.train.metrics import MetricsWriter, Progress
from softclip.train.optim import clamp_logit_scale
from softclip.train.schedule import CosineSchedule
from softclip.train.step import (
    StepModel,
    clip_gradients,
    equalise,
    forward_backward,
    nonfinite_terms,
    step_seed,
)
from softclip.train.stream import DataStream

log = logging.getLogger("softclip.train")

Evaluate = Callable[[torch.nn.Module, int], dict[str, float]]
CHECKPOINT_FORMAT = 1
# What a scheduler sends to stop a job (SLURM: SIGTERM on scancel, preemption and the time limit; a signal
# chosen with --signal, usually SIGUSR1/2, before it), and SIGHUP (the terminal of an interactive run closed).
# Handled like Ctrl-C where nobody else handles them.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP") if hasattr(signal, n))
# Ctrl-C and the stop signals: held while state is half-updated or a checkpoint is being written.
_DEFERRED_SIGNALS = (signal.SIGINT, *STOP_SIGNALS)


@dataclass
class TrainState:
    """Counters a checkpoint carries besides model and optimiser."""

    step: int = 0
    samples: int = 0
    skipped: int = 0
    best_value: float | None = None
    best_step: int | None = None
    best_metric: str | None = None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and the stop signals (SIGTERM, SIGUSR1/2) until the block is done, then raise each one that arrived, once, under its own
    handler (Ctrl-C's ``KeyboardInterrupt`` then lands after a finished checkpoint, never inside ``torch.save``).

    Python runs signal handlers in the main thread whichever thread the OS delivers to, so this holds a signal
    sent to the process too, not only one to this thread (a ``pthread_sigmask`` would not). Signals that are
    ignored, or whose handler Python did not install, are left alone. Elsewhere than the main thread: no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = {}
    for sig in _DEFERRED_SIGNALS:
        handler = signal.getsignal(sig)
        if handler is not None and handler is not signal.SIG_IGN:
            held[sig] = signal.signal(sig, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)


def _raise_stop(signum: int, _frame: Any) -> None:
    raise SignalReceived(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Inside the block, each stop signal (``STOP_SIGNALS``) whose handler is the default one (which would kill
    the process with no checkpoint and the lock left behind) raises :class:`SignalReceived`, a
    ``KeyboardInterrupt``, so it takes Ctrl-C's path: checkpoint, release the lock, one line.

    A signal that has a handler already is left to it: under submitit, SIGUSR2 (or the job's chosen signal)
    checkpoints through the launcher's ``checkpoint`` and requeues, and SIGTERM is logged and bypassed.
    Elsewhere than the main thread: no-op (Python runs handlers in the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in old.items():
        if handler is signal.SIG_DFL:
            signal.signal(sig, _raise_stop)
    try:
        yield
    finally:
        for sig, handler in old.items():
            if handler is signal.SIG_DFL:
                signal.signal(sig, handler)


@dataclass
class Trainer:
    """Runs optimiser steps until ``cfg.train.steps``; one instance per rank.

    Attributes:
        sm: model, objective and precision (:class:`softclip.train.step.StepModel`).
        optimizer, schedule: AdamW and its learning-rate schedule.
        data: the micro-batch stream. env: distributed environment.
        cfg: the run config; the loop reads ``cfg.train`` (steps, logging, checkpoints, NaN policy),
            ``cfg.optim`` (accumulation, clipping), ``cfg.data.batch_size`` (the global batch) and ``cfg.seed``.
        run_dir: the run folder. writer: metrics sink (disabled off rank 0).
        evaluate: ``evaluate(model, step) -> {metric: value}`` or None.
        info: extra plain data stored in every checkpoint (e.g. the config hash).
    """

    sm: StepModel
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    data: DataStream
    env: DistEnv
    cfg: Config
    run_dir: Path
    writer: MetricsWriter
    evaluate: Evaluate | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state: TrainState = field(default_factory=TrainState)

    def __post_init__(self) -> None:
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.ckpt_dir = runfiles.checkpoints_dir(self.run_dir)
        self.eval_dir = runfiles.eval_dir(self.run_dir)
        persistent = set(self.sm.raw.state_dict())
        self._buffers = {n: b for n, b in self.sm.raw.named_buffers() if n in persistent}  # BatchNorm stats
        self._boundary: dict[str, Any] = {}
        self._mark_boundary()

    # ------------------------------------------------------------------------------------------ loop

    def fit(self) -> TrainState:
        """Train from ``state.step`` to ``cfg.train.steps``; returns the final state."""
        progress = Progress(self.cfg.train.steps, self.state.step, enabled=self.env.is_main)
        self._restart_interval()
        try:
            while self.state.step < self.cfg.train.steps:
                terms, grad_norm, data_time = self._train_step()
                self._interval[2] += data_time
                s = self.state.step
                logged = s % self.cfg.train.log_every == 0 or s == self.cfg.train.steps
                if logged:
                    record = self._log(terms, grad_norm)
                    progress.update(record.get("loss"), record["samples_per_s"])
                else:
                    progress.update(None, None)
                if (self.cfg.train.eval_every and s % self.cfg.train.eval_every == 0) or s == self.cfg.train.steps:
                    self.run_evaluation()
                if s % self.cfg.train.ckpt_every == 0 or s == self.cfg.train.steps:
                    self.save()
                if logged:  # timing intervals leave evaluation and checkpoint time out
                    self._restart_interval()
        finally:
            progress.close()
        return self.state

    def _restart_interval(self) -> None:
        # wall start, step, data-wait seconds, process CPU start
        self._interval = [time.perf_counter(), self.state.step, 0.0, time.process_time()]

    def _timing(self) -> dict[str, float]:
        """Per-step averages over the log interval (CPU time: this process, all its threads)."""
        start, step, data, cpu = self._interval
        steps = max(self.state.step - step, 1)
        seconds = max(time.perf_counter() - start, 1e-9)
        return {
            "samples_per_s": steps * self.cfg.data.batch_size / seconds,
            "step_time_s": seconds / steps,
            "data_time_s": data / steps,
            "step_cpu_s": (time.process_time() - cpu) / steps,
        }

    def _train_step(self) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
        s = self.state.step
        torch.manual_seed(step_seed(self.cfg.seed, self.env.rank, s))
        t0 = time.perf_counter()
        micro = equalise([self.data.next() for _ in range(self.cfg.optim.accum_steps)], self.env)
        data_time = time.perf_counter() - t0
        self.schedule.apply(self.optimizer, s)
        terms = forward_backward(self.sm, micro)
        grad_norm = clip_gradients(self.params, self.cfg.optim.grad_clip)
        bad = (
            torch.stack([grad_norm.detach().float(), terms["loss"].detach().float()])
            .isfinite()
            .all()
            .logical_not()
        )
        if all_reduce(bad.float(), self.env, op="max").item() > 0:
            self._non_finite(s, terms)
        else:
            with signals_deferred():
                self.optimizer.step()
                clamp_logit_scale(self.sm.raw.clip.logit_scale, self.cfg.train.logit_scale_max)
                self.sm.raw.update_teacher()  # the EMA teacher (loss.target=momentum) follows the new weights
                self._advance()
        self.optimizer.zero_grad(set_to_none=True)
        return terms, grad_norm, data_time

    def _advance(self) -> None:
        self.state.step += 1
        self.state.samples += self.cfg.data.batch_size
        self._mark_boundary()

    def _non_finite(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        """Apply ``train.nan_policy`` to a step whose loss or gradient is NaN/inf (step not applied)."""
        names = nonfinite_terms(terms) or ["gradient norm (the terms are finite on this rank)"]
        where = f"step {step + 1}: non-finite {', '.join(names)}"
        if self.cfg.train.nan_policy == "stop":
            keep = ""
            if self.env.is_main:
                last = ckpt.latest_valid(self.ckpt_dir)
                keep = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written yet"
            raise NonFiniteLossError(f"{where} (train.nan_policy=stop){keep}")
        self.state.skipped += 1
        log.warning("%s: step skipped (%d skipped so far)", where, self.state.skipped)
        if self.state.skipped > self.cfg.train.max_skipped_steps:
            raise NonFiniteLossError(
                f"{where}: {self.state.skipped} steps skipped, more than train.max_skipped_steps="
                f"{self.cfg.train.max_skipped_steps}"
            )
        with signals_deferred():
            self._advance()

    # --------------------------------------------------------------------------------------- logging

    def _log(self, terms: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> dict[str, Any]:
        names = sorted(k for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1)
        values = torch.stack([terms[k].detach().float().reshape(()) for k in names])
        values = all_reduce(values, self.env, op="mean").tolist()
        bad = gather_objects(dict(self.data.loader.bad.counts), self.env)
        bad_total = Counter()
        for counts in bad:
            bad_total.update(counts)
        record: dict[str, Any] = {
            "kind": "train",
            "step": self.state.step,
            "epoch": self.data.epoch,
            "samples": self.state.samples,
            "lr": self.schedule.last_lr,
            **dict(zip(names, values, strict=True)),
            "logit_scale": self.sm.raw.clip.logit_scale.detach().exp().item(),
            "grad_norm": grad_norm.item(),
            "skipped_steps": self.state.skipped,
            "data_bad": sum(bad_total.values()),
            **{f"data_bad_{k}": v for k, v in sorted(bad_total.items())},
            **self._timing(),
        }
        return self.writer.write(record)

    # ------------------------------------------------------------------------------------ evaluation

    def run_evaluation(self) -> dict[str, float] | None:
        """Evaluate on rank 0 (RNG untouched for training), log, write ``eval/``, track ``best.pt``."""
        if self.evaluate is None:
            return None
        results = None
        if self.env.is_main:
            model = self.sm.raw
            was_training = model.training
            t0 = time.perf_counter()
            state = ckpt.capture_rng()
            try:
                model.eval()
                with torch.no_grad():
                    results = {k: float(v) for k, v in self.evaluate(model, self.state.step).items()}
            finally:
                model.train(was_training)
                ckpt.restore_rng(state)
            self._record_eval(results, time.perf_counter() - t0)
        barrier(self.env)
        return results

    def _record_eval(self, results: dict[str, float], seconds: float) -> None:
        s = self.state.step
        self.eval_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.eval_dir / f"step_{s:08d}.json", {"step": s, "metrics": results})
        self.writer.write({"kind": "eval", "step": s, **results, "eval_time_s": seconds})
        if not results:
            return
        key = self.cfg.train.best_metric or next(iter(results))
        if key not in results:
            log.warning("train.best_metric=%r is not among the evaluation metrics %s", key, sorted(results))
            return
        value, best = results[key], self.state.best_value
        better = best is None or (value > best if self.cfg.train.best_mode == "max" else value < best)
        if better:
            self.state.best_value, self.state.best_step, self.state.best_metric = value, s, key
            best = {
                "format": CHECKPOINT_FORMAT,
                "step": s,
                "model": self.sm.raw.state_dict(),
                "train": asdict(self.state),
                "info": self.info,
            }
            with signals_deferred():  # weights only: best.pt is for evaluation, not for resuming
                ckpt.save_checkpoint(best, self.ckpt_dir / ckpt.BEST_NAME)
            log.info("new best %s=%.4f at step %d -> %s", key, value, s, self.ckpt_dir / ckpt.BEST_NAME)

    # ----------------------------------------------------------------------------------- checkpoints

    def _rank_state(self) -> dict[str, Any]:
        return {"rng": ckpt.capture_rng(), "data": self.data.state_dict()}

    def _mark_boundary(self) -> None:
        """Remember what a step changes besides parameters and optimiser, for :meth:`save_now` mid-step.

        RNG states are not needed here: every step reseeds from (seed, rank, step).
        """
        self._boundary = {
            "train": asdict(self.state),
            "data": self.data.state_dict(),
            "buffers": {k: v.detach().clone() for k, v in self._buffers.items()},
        }

    def state_dict(
        self,
        ranks: list[dict[str, Any]],
        train: dict[str, Any] | None = None,
        model: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """The checkpoint payload (plain data only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.state.step if train is None else train["step"],
            "model": self.sm.raw.state_dict() if model is None else model,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": None,
            "train": asdict(self.state) if train is None else train,
            "ranks": ranks,
            "world_size": self.env.world_size,
            "info": self.info,
        }

    def save(self) -> Path | None:
        """Checkpoint now (collective: every rank contributes its RNG and data position; rank 0 writes)."""
        ranks = gather_objects(self._rank_state(), self.env)
        path = None
        if self.env.is_main:
            path = ckpt.checkpoint_path(self.ckpt_dir, self.state.step)
            with signals_deferred():
                ckpt.save_checkpoint(self.state_dict(ranks), path)
                ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)
            log.info("checkpoint %s", path)
        return path

    def save_now(self) -> Path | None:
        """Checkpoint the last step boundary, e.g. from a signal handler (one process; DDP uses ``save``)."""
        if self.env.distributed:
            log.warning(
                "save_now under DDP is not supported; the run resumes from its last periodic checkpoint"
            )
            return None
        model = self.sm.raw.state_dict()
        model.update(self._boundary["buffers"])
        train = self._boundary["train"]
        path = ckpt.checkpoint_path(self.ckpt_dir, train["step"])
        if ckpt.record_path(path).is_file():
            return path
        rank = {"rng": ckpt.capture_rng(), "data": self._boundary["data"]}
        ckpt.save_checkpoint(self.state_dict([rank], train=train, model=model), path)
        ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)
        log.info("checkpoint on request %s", path)
        return path

    def load(self, state: dict[str, Any]) -> None:
        """Restore everything from a checkpoint payload (all ranks)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        if state["world_size"] != self.env.world_size:
            raise TrainingError(
                f"the checkpoint was written by {state['world_size']} processes, this run has "
                f"{self.env.world_size}; exact resume needs the same world size"
            )
        mismatch = ckpt.weights_mismatch(self.sm.raw.state_dict(), state["model"])
        if mismatch is not None:
            raise TrainingError(f"the checkpoint does not fit this run's model (was model.* edited in "
                                f"{self.run_dir / 'config.yaml'}?): {mismatch}")  # fmt: skip
        self.sm.raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.state = TrainState(**state["train"])
        mine = state["ranks"][self.env.rank]
        ckpt.restore_rng(mine["rng"])
        self.data.load_state_dict(mine["data"])
        self._mark_boundary()
