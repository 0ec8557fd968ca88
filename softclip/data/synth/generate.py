"""``generate``: write the whole SynthScenes benchmark (train shards + four evaluation sets + card), atomically.

Everything is staged in a hidden sibling folder and renamed into place at the end, so an interrupted run never
leaves a half dataset at ``out_dir``. A folder whose card records the same spec, seed and generator version is
returned as is. Work units run in a process pool (``spawn``) or inline; the bytes are the same either way.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from softclip.atomic import pid_alive
from softclip.data.layout import CARD_JSON, CARD_MD
from softclip.data.synth import copydays_set, instance_set, retrieval_set, train_set, zeroshot_set  # noqa: F401
from softclip.data.synth.base import SETS
from softclip.data.synth.card import VERSION, build_card, disk_usage, render_readme
from softclip.data.synth.determinism import write_bytes, write_json
from softclip.data.synth.spec import SynthConfig

log = logging.getLogger(__name__)

SET_ORDER = ("train", "zeroshot", "retrieval", "instance", "copydays")
_WORKER: dict[str, Any] = {}


def cached_card(out_dir: str | Path, spec: SynthConfig, seed: int) -> dict[str, Any] | None:
    """The card at ``out_dir`` if it records this spec, seed and generator version, else None."""
    path = Path(out_dir) / CARD_JSON
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (card.get("spec") == spec.model_dump(mode="json") and card.get("seed") == seed
            and card.get("version") == VERSION)
    return card if same else None


def _init_worker(spec: SynthConfig, seed: int, root: str) -> None:
    _WORKER.update(spec=spec, seed=seed, root=Path(root))


def _run_task(task: tuple[str, Any]) -> Any:
    name, unit = task
    return SETS.get(name).run_unit(_WORKER["spec"], _WORKER["seed"], _WORKER["root"], unit)


def _run_all(tasks: list[tuple[str, Any]], spec: SynthConfig, seed: int, root: Path, workers: int) -> list[Any]:
    if workers <= 1 or len(tasks) <= 1:
        _init_worker(spec, seed, str(root))
        try:
            return [_run_task(t) for t in tasks]
        finally:
            _WORKER.clear()
    with mp.get_context("spawn").Pool(min(workers, len(tasks)), _init_worker, (spec, seed, str(root))) as pool:
        return pool.map(_run_task, tasks, chunksize=1)


def _build(root: Path, spec: SynthConfig, seed: int, workers: int) -> dict[str, Any]:
    sets = [SETS.get(name) for name in SET_ORDER]
    tasks = [(s.name, unit) for s in sets for unit in s.units(spec, seed)]
    results = _run_all(tasks, spec, seed, root, workers)
    summaries = {}
    for s in sets:
        mine = [r for (name, _), r in zip(tasks, results, strict=True) if name == s.name]
        summaries[s.name] = s.finalize(spec, seed, root, mine)
    card = build_card(spec, seed, summaries, disk_usage(root, [s.folder for s in sets]))
    write_bytes(root / CARD_MD, render_readme(card).encode("utf-8"))
    write_json(root / CARD_JSON, card, indent=2)  # last: its presence marks a complete dataset
    return card


def _remove_stale_staging(out: Path) -> None:
    """Delete staging folders of ``out`` left by generations whose process is gone."""
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(path.name.split(".tmp-")[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CARD_JSON).is_file())):
        raise FileExistsError(f"{out} exists and is not a SynthScenes dataset (no {CARD_JSON}); refusing to replace it")


def _swap_in(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``, replacing an earlier SynthScenes dataset (never an unrelated folder)."""
    _check_replaceable(out)
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def generate(out_dir: str | Path, spec: SynthConfig, seed: int, workers: int = 1, force: bool = False) -> dict[str, Any]:
    """Write the SynthScenes benchmark for ``spec`` and ``seed`` to ``out_dir``; returns the dataset card.

    Args:
        out_dir: target folder (see ``softclip.data.layout`` for its contents).
        spec: the generator knobs.
        seed: scene seed; the same seed gives byte-identical files (the detector has its own seed in the spec).
        workers: processes to use (1: inline); the output does not depend on it. Workers are spawned, so a
            calling script needs the usual ``if __name__ == "__main__":`` guard.
        force: regenerate even if ``out_dir`` already holds this spec and seed.
    """
    out = Path(out_dir).absolute()
    if not force and (card := cached_card(out, spec, seed)) is not None:
        log.info("SynthScenes at %s is up to date (seed %d)", out, seed)
        return card
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    start = time.perf_counter()
    try:
        card = _build(staging, spec, seed, workers)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("SynthScenes written to %s in %.1f s (%d workers)", out, time.perf_counter() - start, workers)
    return card
