"""Optuna plumbing: sampler and pruner registries, storage URLs, the study and its identity, stale trials.

Storage URLs: ``sqlite:///path/study.db`` (default), ``postgresql://user:pw@host/db`` (many workers),
``journal:PATH`` (a shared file system without a database). RDB storages use optuna's own heartbeat with
``RetryHeartbeatStaleTrialCallback``; optuna's JournalStorage has no heartbeat, so its workers beat into a trial
user attribute (:func:`journal_heartbeat`) and :func:`fail_stale` applies the same retry callback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from softclip.config import ConfigError
from softclip.errors import SoftclipError
from softclip.identity import identity_diff
from softclip.registry import Registry, RegistryError
from softclip.sweep.space import grid_space
from softclip.sweep_spec import SweepSpec, sweep_dir, sweep_identity

log = logging.getLogger("softclip.sweep")

SAMPLERS: Registry[Callable[[SweepSpec], optuna.samplers.BaseSampler]] = Registry("sampler.name")
PRUNERS: Registry[Callable[[dict[str, Any]], optuna.pruners.BasePruner]] = Registry("pruner.name")
HEARTBEAT_ATTR = "softclip:heartbeat"
IDENTITY_ATTR = "softclip:identity"
JOURNAL_PREFIX = "journal:"
#: single-objective samplers: a multi-objective sweep that names one is a config error
SINGLE_OBJECTIVE = ("cmaes",)
#: samplers whose seed fixes an order that trial numbers index (grid: the shuffled grid; qmc: the scrambled
#: sequence): every worker and every resumed sweep must use the same seed, or two trials get the same point
ORDERED_SAMPLERS = ("grid", "qmc")


class StorageError(SoftclipError):
    """The study storage cannot be opened (database unreachable, bad URL); the message shows the URL redacted."""


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence optuna's experimental-feature warnings and its note that heartbeats are meant for
    ``Study.optimize`` (the journal heartbeat and the requeue retry run outside it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def seeded(
    cls: type[optuna.samplers.BaseSampler], needs: str | None = None, continuous_only: bool = False, **defaults: Any
) -> Callable[[SweepSpec], optuna.samplers.BaseSampler]:
    """A factory of ``cls(seed=sampler.seed, **defaults)``, the file's ``sampler.options`` overriding ``defaults``.

    ``needs``: a package the sampler imports. ``continuous_only`` (CMA-ES, QMC): the sampler models continuous
    parameters only; categorical and conditional ones go to an independent TPE sampler.
    """

    def build(spec: SweepSpec) -> optuna.samplers.BaseSampler:
        if needs and importlib.util.find_spec(needs) is None:
            raise ConfigError(f"sampler.name={spec.sampler.name!r} needs the {needs!r} package: pip install {needs}")
        options = dict(defaults)
        if continuous_only:
            options.update(independent_sampler=optuna.samplers.TPESampler(seed=spec.sampler.seed),
                           warn_independent_sampling=False)  # fmt: skip
        return cls(seed=spec.sampler.seed, **{**options, **spec.sampler.options})

    return build


# constant_liar: workers running in parallel do not all sample the same point; group: conditional spaces
SAMPLERS.register("tpe")(seeded(optuna.samplers.TPESampler, multivariate=True, group=True, constant_liar=True))
SAMPLERS.register("random")(seeded(optuna.samplers.RandomSampler))
SAMPLERS.register("cmaes")(seeded(optuna.samplers.CmaEsSampler, needs="cmaes", continuous_only=True))
SAMPLERS.register("qmc")(seeded(optuna.samplers.QMCSampler, needs="scipy", continuous_only=True, qmc_type="sobol"))
SAMPLERS.register("nsga2")(seeded(optuna.samplers.NSGAIISampler))
SAMPLERS.register("grid")(lambda spec: optuna.samplers.GridSampler(
    grid_space(spec.space), seed=spec.sampler.seed, **spec.sampler.options))  # fmt: skip
PRUNERS.register("none")(lambda options: optuna.pruners.NopPruner(**options))
PRUNERS.register("median")(lambda options: optuna.pruners.MedianPruner(**{"n_startup_trials": 4, **options}))
PRUNERS.register("hyperband")(lambda options: optuna.pruners.HyperbandPruner(**{"reduction_factor": 3, **options}))
PRUNERS.register("asha")(lambda options: optuna.pruners.SuccessiveHalvingPruner(**options))


def make_sampler(spec: SweepSpec, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler; ``offset`` (trials already in the study, and the worker's number) shifts the seed of
    the random samplers so that workers and resumed sweeps do not replay each other's random points."""
    if spec.sampler.name in SINGLE_OBJECTIVE and len(spec.objective) > 1:
        raise ConfigError(f"sampler.name={spec.sampler.name!r} is single-objective; use tpe or nsga2 for several objectives")
    if offset and spec.sampler.seed is not None and spec.sampler.name not in ORDERED_SAMPLERS:
        spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"seed": spec.sampler.seed + offset})})
    return _build(SAMPLERS, spec.sampler.name, spec, spec.source, "sampler.options")


def _build(registry: Registry[Any], name: str, arg: Any, source: str, options: str) -> Any:
    """``registry[name](arg)``; an unknown name or a bad keyword option is a ConfigError naming the file."""
    try:
        with quiet_optuna():
            return registry.get(name)(arg)
    except RegistryError as err:
        raise ConfigError(f"{source}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"{source}: {options}: {err}") from None


def resolve_storage_url(url: str | None, sweep_dir: Path) -> str:
    """Absolute storage URL (workers may run elsewhere): default ``sqlite:///<sweep_dir>/study.db``."""
    if url is None:
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        return url if rest in ("", ":memory:") else f"sqlite:///{Path(rest).resolve()}"
    if url.startswith(JOURNAL_PREFIX):
        return f"{JOURNAL_PREFIX}{journal_path(url).resolve()}"
    return url


def journal_path(url: str) -> Path:
    """``journal:PATH`` (also ``journal:///abs/path``) -> the journal file path."""
    rest = url[len(JOURNAL_PREFIX) :]
    return Path(rest[2:] if rest.startswith("//") else rest)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and status output)."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def dashboard_command(url: str) -> list[str]:
    """The optuna-dashboard command line that opens the storage ``url`` (password redacted): journal files as
    their bare path (the dashboard recognises them), PostgreSQL with the installed driver named."""
    arg = str(journal_path(url)) if url.startswith(JOURNAL_PREFIX) else _sqlalchemy_url(url)
    return ["optuna-dashboard", redact_url(arg)]


def _sqlalchemy_url(url: str) -> str:
    """``postgresql://`` with psycopg2 when psycopg (v3, SQLAlchemy 2.1's default) is not installed."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def make_storage(
    url: str, heartbeat_interval: int, grace_period: int, max_retry: int, worker: bool = False
) -> optuna.storages.BaseStorage:
    """Optuna storage for ``url`` with heartbeats and stale-trial retry configured. ``worker=True`` skips table
    creation and the schema check (the driver did both), which saves about a second per trial."""
    if url.startswith(JOURNAL_PREFIX):
        journal_path(url).parent.mkdir(parents=True, exist_ok=True)
        with quiet_optuna():
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal_path(url))))
    if url.startswith("sqlite:///") and not worker and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///") :])  # write-ahead logging (persistent): writes stop blocking readers
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    engine: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with quiet_optuna():
            return optuna.storages.RDBStorage(
                _sqlalchemy_url(url), engine_kwargs=engine, skip_compatibility_check=worker,
                skip_table_creation=worker, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            )  # fmt: skip
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        orig = getattr(err, "orig", None) or err  # SQLAlchemy wraps the driver's error, which may echo the DSN
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        raise StorageError(f"cannot open the study storage {redact_url(url)}: {redact_url(first)}") from None


def open_study(spec: SweepSpec, storage_url: str | None = None, create: bool = True, worker_index: int | None = None,
               overwrite: bool = False) -> optuna.Study:  # fmt: skip
    """The sweep's study with its sampler, pruner, directions and heartbeat storage.

    ``create``: create it unless it exists, and check the sweep's identity (:func:`check_identity`; with
    ``overwrite`` an existing study of another identity is deleted first). ``worker_index``: a worker's
    connection (no schema work); with the trials already in the study it shifts the random samplers' seed.
    """
    url = storage_url or resolve_storage_url(spec.storage, sweep_dir(spec))
    storage = make_storage(url, spec.heartbeat_interval, spec.effective_grace, spec.max_retry,
                           worker=worker_index is not None)  # fmt: skip
    name, sampler = spec.study_name or spec.name, make_sampler(spec)
    pruner = _build(PRUNERS, spec.pruner.name, dict(spec.pruner.options), spec.source, "pruner.options")
    if not create:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    else:
        if overwrite and name in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    directions=spec.directions, load_if_exists=True)  # fmt: skip
        check_identity(study, spec, url)
        with quiet_optuna():
            study.set_metric_names([o.metric for o in spec.objective])
    offset = len(study.get_trials(deepcopy=False)) + 100_003 * (worker_index or 0)
    if offset:
        study.sampler = make_sampler(spec, offset=offset)
    return study


def check_identity(study: optuna.Study, spec: SweepSpec, url: str) -> None:
    """Record the sweep's identity on a new study; refuse to resume one of another identity (ConfigError naming
    the differing keys). A study from before identities were recorded adopts this one."""
    saved = study.user_attrs.get(IDENTITY_ATTR)
    if saved is None:
        study.set_user_attr(IDENTITY_ATTR, sweep_identity(spec))
        return
    diffs = identity_diff(saved, sweep_identity(spec))
    if diffs:
        raise ConfigError(
            f"{spec.source}: sweep {study.study_name!r} in {redact_url(url)} was run with another search space, "
            f"objective, sampler or base config; differing keys: {'; '.join(diffs)}. Give the sweep a new name "
            "(or study_name), or pass --overwrite to delete the study and start again"
        )


@contextlib.contextmanager
def journal_heartbeat(trial: optuna.Trial, interval: float) -> Iterator[None]:
    """Beats into the trial's ``softclip:heartbeat`` user attribute every ``interval`` s while the block runs.
    Covers an optuna limitation: JournalStorage has no heartbeat (RDB storages get optuna's own)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                trial.set_user_attr(HEARTBEAT_ATTR, time.time())
            except Exception as err:  # noqa: BLE001 - a finished trial or a missed beat: never kill the run
                log.debug("heartbeat of trial %d: %s", trial.number, err)
                return

    trial.set_user_attr(HEARTBEAT_ATTR, time.time())
    thread = threading.Thread(target=beat, name="softclip-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retry(study: optuna.Study, number: int, max_retry: int) -> bool:
    """Fail RUNNING trial ``number`` and re-enqueue it (WAITING) with optuna's retry callback; False when it
    finished meanwhile. Optuna has no public way to continue a RUNNING trial; the retry reuses its run folders."""
    try:
        study.tell(number, state=TrialState.FAIL)
    except (RuntimeError, ValueError):
        return False
    with quiet_optuna():
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, frozen)
    return True


def fail_stale(study: optuna.Study, spec: SweepSpec, url: str) -> list[int]:
    """Fail RUNNING trials without a heartbeat for ``grace_period`` and re-enqueue them; returns their numbers.
    RDB storages: optuna's ``fail_stale_trials``; journal: by the :func:`journal_heartbeat` attribute (the start
    time counts as a beat)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not url.startswith(JOURNAL_PREFIX):
        with quiet_optuna():
            optuna.storages.fail_stale_trials(study)
        still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        return sorted(t.number for t in running if t.number not in still)
    now, failed = time.time(), []
    for trial in running:
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        beat = max(float(trial.user_attrs.get(HEARTBEAT_ATTR, 0.0)), started)
        if now - beat > spec.effective_grace and retry(study, trial.number, spec.max_retry):
            failed.append(trial.number)
    return failed


def run_key(trial: FrozenTrial) -> int:
    """The trial number its run folder is named after: a retried trial reuses (and resumes) the original's."""
    with quiet_optuna():
        history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    return int(history[0]) if history else trial.number
