"""``train(cfg)``: the top-down entry point. Set up the run folder, data, model and optimiser; train; finish.

Batch semantics: ``data.batch_size`` is the *global* batch of one optimiser step. Each of the W ranks reads
micro-batches of ``batch_size / (W * optim.accum_steps)`` samples, and the objective sees the whole global
batch, so a config means the same training on any number of processes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from softclip import checkpoint as ckpt
from softclip import runfiles
from softclip.config import Config, ConfigError, check_trainable
from softclip.data.synth import roots as synth_roots
from softclip.threads import cpu_threads
from softclip.train import dist, rundir
from softclip.train.compiling import compile_towers, share_inductor_cache, should_compile
from softclip.train.errors import TrainingError, TrainingInterrupted
from softclip.train.hostmem import configure_host_memory
from softclip.train.lock import RunLock
from softclip.train.loop import STOP_SIGNALS, Evaluate, Trainer, signals_deferred, stop_signals_raise
from softclip.train.meta import collect_meta
from softclip.train.metrics import MetricsWriter, truncate_metrics
from softclip.train.optim import build_optimizer
from softclip.train.schedule import CosineSchedule
from softclip.train.step import StepModel
from softclip.train.stream import DataStream
from softclip.train.target_result import write_target_result

log = logging.getLogger("softclip.train")

VINVL_ROI_DIM = 2054
_ACTIVE: list[Trainer] = []  # the trainer of this process while it runs (for save_now)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on CPU."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def micro_batch_size(cfg: Config, world_size: int) -> int:
    """Per-rank micro-batch: ``data.batch_size / (world_size * optim.accum_steps)``, which must divide."""
    parts = world_size * cfg.optim.accum_steps
    if cfg.data.batch_size % parts:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} (the global batch per step) must be divisible by "
            f"world_size x optim.accum_steps = {world_size} x {cfg.optim.accum_steps}"
        )
    return cfg.data.batch_size // parts


def roi_dim(cfg: Config) -> int:
    if cfg.data.roi_dim is not None:
        return cfg.data.roi_dim
    return cfg.data.synth.detector.roi_dim if cfg.data.source == "synth" else VINVL_ROI_DIM


def read_sidecars(cfg: Config) -> bool:
    """Read ROI/tag sidecars only when ``data.sidecars`` allows it and a loss source uses them."""
    needed = cfg.loss.reads_sidecars
    if needed and not cfg.data.sidecars:
        log.warning(
            "data.sidecars=false with loss.image_source=%s / loss.text_source=%s: no regions or tags are "
            "read, so every self-similarity target row falls back to one-hot",
            cfg.loss.image_source,
            cfg.loss.text_source,
        )
    return needed and cfg.data.sidecars


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ setup


def reads_scenes(cfg: Config) -> bool:
    """Whether batches carry scene annotations: the oracle target needs them; on SynthScenes every run reads them
    for the target-precision diagnostics (reading them draws no random numbers and changes no batch)."""
    return cfg.loss.reads_scenes or cfg.data.source == "synth"


def setup_data(cfg: Config, env: dist.DistEnv, preprocess: Callable, tokenizer: Callable) -> Any:
    """The training loader of this rank (generating SynthScenes first when ``data.source=synth``)."""
    from softclip.data.loader import build_train_loader

    if cfg.data.source == "synth":
        if env.is_main:
            synth_roots.ensure(cfg.data)
        dist.barrier(env)
    return build_train_loader(
        cfg.data,
        preprocess=preprocess,
        tokenizer=tokenizer,
        batch_size=micro_batch_size(cfg, env.world_size),
        roi_dim=roi_dim(cfg),
        seed=cfg.seed,
        sidecars=read_sidecars(cfg),
        scenes=reads_scenes(cfg),
        rank=env.rank,
        world_size=env.world_size,
        pin_memory=env.device.type == "cuda" and cfg.data.workers > 0,
    )


def setup_model(cfg: Config, env: dist.DistEnv, precision: str) -> tuple[StepModel, Callable, Callable]:
    """(StepModel with DDP / compile applied, preprocess_train, tokenizer)."""
    from softclip.models import build_model
    from softclip.objective import SoftCLIPObjective

    model, preprocess, _, tokenizer = build_model(cfg.model, cfg.roi, cfg.loss, roi_in_dim=roi_dim(cfg))
    model = model.to(env.device).train()
    forward: Any = model
    no_sync = None
    if env.distributed:
        learns = model.roi is not None and getattr(model.roi, "learns", False)
        ddp = DistributedDataParallel(
            model,
            device_ids=[env.device] if env.device.type == "cuda" else None,
            find_unused_parameters=learns,
        )
        forward, no_sync = ddp, ddp.no_sync
    if should_compile(cfg.train.compile, cfg.train.steps, env.device):
        share_inductor_cache(cfg.output_dir)
        log.info("compiling %s (train.compile=%s)", ", ".join(compile_towers(model.clip)), cfg.train.compile)
    objective = SoftCLIPObjective(cfg.loss).to(env.device)
    sm = StepModel(
        forward, model, objective, cfg.loss.image_source, cfg.loss.text_source, env.device, precision, no_sync
    )
    return sm, preprocess, tokenizer


def _prepare_run_dir(
    run_dir: Path, cfg: Config, overwrite: bool, env: dist.DistEnv
) -> tuple[Path | None, RunLock | None]:
    """Rank 0 takes the folder's lock and prepares it; every rank gets the checkpoint path or the same error.

    Returns (checkpoint to resume from or None, the lock on rank 0 / None on the other ranks).
    """
    outcome: tuple[str, Any]
    lock = None
    if env.is_main:
        try:
            if not (run_dir / runfiles.LOCK).exists():  # a folder that is no run is refused untouched (no lock)
                rundir.check_owner(run_dir, None if overwrite else cfg)
            with signals_deferred():  # a stop signal inside acquire() would leave a lock nobody releases
                lock = RunLock(run_dir).acquire()
            outcome = ("ok", rundir.prepare(run_dir, cfg, overwrite))
        except (ConfigError, FileExistsError, TrainingError) as err:
            outcome = ("error", err)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
    outcome = dist.broadcast_object(outcome if env.is_main else None, env)
    if outcome[0] == "error":
        if lock is not None:
            lock.release()
        raise outcome[1]
    return outcome[1], lock


# -------------------------------------------------------------------------------------------------- run


def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    evaluate: Evaluate | None = None,
    preflight: Callable[[], Any] | None = None,
) -> Path:
    """Train ``cfg`` into ``run_dir`` (default ``cfg.output_dir/cfg.name``); resume if it holds a checkpoint.

    Args:
        cfg: the resolved config.
        run_dir: the run folder.
        overwrite: start again even if the folder holds a finished (or resumable) run.
        evaluate: ``evaluate(model, step) -> {metric: value}``, run on rank 0 every ``train.eval_every``
            steps and at the end; None skips evaluation.
        preflight: called on rank 0 once the data is in place and before the first step (e.g. to check that
            the evaluation suite's datasets exist, so a run does not fail only after training).

    Returns:
        The run folder (holding ``done.json``).

    Raises:
        RunFinishedError: the folder holds a finished run and ``overwrite`` is False.
        ConfigError: resuming with a config that differs (the keys are named), or an invalid batch split.
        NonFiniteLossError: a non-finite loss under ``train.nan_policy=stop`` (or too many skipped steps).
    """
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.name
    env = dist.setup(cfg.train.device)
    if not cfg.train.threads:  # record the count it trains with: retraining from config.yaml gives the same bits
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": torch.get_num_threads()})})
    try:
        with cpu_threads(cfg.train.threads):
            configure_host_memory(cfg.train.host_memory)
            return _run(cfg, run_dir, overwrite, evaluate, env, preflight)
    finally:
        dist.cleanup(env)


def _run(cfg: Config, run_dir: Path, overwrite: bool, evaluate: Evaluate | None, env: dist.DistEnv,
         preflight: Callable[[], Any] | None = None) -> Path:  # fmt: skip
    precision = resolve_precision(cfg.train.precision, env.device)
    micro_batch_size(cfg, env.world_size)  # fail on a bad split before any work
    for warning in check_trainable(cfg):  # a degenerate objective is refused (ConfigError) before any work
        if env.is_main:
            log.warning("%s", warning)
    with stop_signals_raise():  # SIGTERM & co. end like Ctrl-C: checkpoint, lock released, one line
        resume, lock = _prepare_run_dir(run_dir, cfg, overwrite, env)
        try:
            _train_locked(cfg, run_dir, resume, lock, evaluate, env, precision, preflight)
        finally:
            if lock is not None:
                lock.release()
    return run_dir


def _train_locked(cfg: Config, run_dir: Path, resume: Path | None, lock: RunLock | None, evaluate: Evaluate | None,
                  env: dist.DistEnv, precision: str, preflight: Callable[[], Any] | None) -> None:  # fmt: skip
    """Set up, fit and finish a run whose folder this process owns (``lock`` on rank 0)."""
    seed_everything(cfg.seed)
    sm, preprocess, tokenizer = setup_model(cfg, env, precision)
    loader = setup_data(cfg, env, preprocess, tokenizer)
    if preflight is not None and env.is_main:
        preflight()
    payload = ckpt.load_checkpoint(resume, map_location=env.device) if resume is not None else None
    if env.is_main:
        _start_files(run_dir, cfg, env, precision, None if payload is None else int(payload["step"]))
    trainer = _make_trainer(cfg, run_dir, env, sm, DataStream(loader, env.device), evaluate)
    if payload is not None:
        try:
            trainer.load(payload)
        except TrainingError as err:
            raise TrainingError(f"cannot resume from {resume}: {err}") from None
        log.info("resumed from %s at step %d", resume, trainer.state.step)
        del payload
    _ACTIVE.append(trainer)
    try:
        state = trainer.fit()
    except KeyboardInterrupt as err:
        raise _interrupted(trainer, run_dir, getattr(err, "signum", None)) from None
    finally:
        _ACTIVE.remove(trainer)
        trainer.writer.close()
    if env.is_main:
        if lock is not None:
            lock.check()  # a trainer that lost its folder must not write the new owner's results
        best = {"metric": state.best_metric, "value": state.best_value, "step": state.best_step}
        summary = {"step": state.step, "samples": state.samples, "skipped_steps": state.skipped, "best": best}
        write_target_result(run_dir, cfg.hash(), state.step)  # before done.json: a finished run holds it
        rundir.write_done(run_dir, summary)
        if cfg.train.keep_when_done is not None:  # after done.json: a crash before it still has every checkpoint
            ckpt.prune_checkpoints(trainer.ckpt_dir, cfg.train.keep_when_done)
    dist.barrier(env)


def _interrupted(trainer: Trainer, run_dir: Path, signum: int | None = None) -> TrainingInterrupted:
    """Checkpoint the last step boundary after Ctrl-C (``signum`` None) or a stop signal; further stop signals
    are ignored meanwhile."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    held = (signal.SIGINT, *STOP_SIGNALS) if main else ()
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in held}
    try:
        path = trainer.save_now()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if path is None:
        path = ckpt.latest_valid(runfiles.checkpoints_dir(run_dir))
    saved = "no checkpoint was written yet"
    if path is not None:
        saved = f"checkpoint {path} holds step {int(ckpt.CKPT_RE.match(path.name).group(1))}"
    by = "" if signum is None else f" by {signal.Signals(signum).name}"
    return TrainingInterrupted(
        f"training interrupted at step {trainer.state.step}{by}; {saved}. Resume with the same command "
        f"(or: softclip train {run_dir / rundir.CONFIG} --run-dir {run_dir})",
        130 if signum is None else 128 + signum,
    )


def _start_files(run_dir: Path, cfg: Config, env: dist.DistEnv, precision: str, resumed: int | None) -> None:
    """Drop metric lines a resumed run will redo; write (or extend) ``meta.json``."""
    dropped = truncate_metrics(run_dir / rundir.METRICS, resumed or 0)
    if dropped:
        log.info("dropped %d metric lines past step %d (redone after resume)", dropped, resumed or 0)
    rundir.write_meta(run_dir, collect_meta(cfg.seed, env.device, env.world_size, precision), resumed)


def _make_trainer(
    cfg: Config, run_dir: Path, env: dist.DistEnv, sm: StepModel, data: DataStream, evaluate: Evaluate | None
) -> Trainer:
    o = cfg.optim
    optimizer = build_optimizer(o, sm.raw, env.device)
    schedule = CosineSchedule(o.lr, o.warmup_steps, cfg.train.steps, o.min_lr_ratio)
    tensorboard = run_dir / "tensorboard" if cfg.train.tensorboard else None
    writer = MetricsWriter(run_dir / rundir.METRICS, tensorboard, enabled=env.is_main)
    info = {"config_hash": cfg.hash()}
    return Trainer(sm, optimizer, schedule, data, env, cfg, run_dir, writer, evaluate, info)


def save_now() -> Path | None:
    """Checkpoint the running trainer of this process at its last step boundary (for preemption handlers)."""
    return _ACTIVE[-1].save_now() if _ACTIVE else None
