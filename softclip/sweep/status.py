"""``softclip sweep FILE --status``: the trials table, the best so far and the failures, as text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from softclip.sweep.driver import target_trials
from softclip.sweep.spec import SweepSpec, sweep_dir
from softclip.sweep.study import (
    JOURNAL_PREFIX,
    best_of,
    dashboard_command,
    journal_path,
    open_study,
    redact_url,
    resolve_storage_url,
    run_key,
)
from softclip.sweep.trial import ERROR_ATTR


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One plain dict per trial: number, state, run key, params, values, last step, seconds, error."""
    return [{
        "number": t.number, "state": t.state.name, "run": run_key(t), "params": dict(t.params),
        "values": list(t.values) if t.values else None,
        "last_step": max(t.intermediate_values) if t.intermediate_values else None,
        "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
        if t.datetime_start and t.datetime_complete else None, "error": t.user_attrs.get(ERROR_ATTR),
    } for t in study.get_trials(deepcopy=False)]  # fmt: skip


def _table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    header = ["#", "state", "run", *keys, "value(s)", "step", "secs"]
    body = []
    for r in rows:
        values = ",".join(_fmt(v) for v in r["values"]) if r["values"] else "-"
        secs = f"{r['seconds']:.0f}" if r["seconds"] is not None else "-"
        step = "-" if r["last_step"] is None else str(r["last_step"])
        params = [_fmt(r["params"][k]) if k in r["params"] else "-" for k in keys]
        body.append([str(r["number"]), r["state"], str(r["run"]), *params, values, step, secs])
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in (header, *body)]


def _exists(url: str) -> bool:
    """False for a SQLite or journal file that is not there (opening it would create it)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).is_file()
    if url.startswith(JOURNAL_PREFIX):
        return journal_path(url).is_file()
    return True


def sweep_status(spec: SweepSpec, storage_url: str | None = None) -> str:
    """Text report of a sweep's study (the study must exist)."""
    url = storage_url or resolve_storage_url(spec.storage, sweep_dir(spec))
    missing = f"sweep {spec.name}: no study {spec.study_name or spec.name!r} in {redact_url(url)} yet"
    if not _exists(url):
        return missing
    try:
        study = open_study(spec, url, create=False)
    except KeyError:
        return missing
    rows = trial_rows(study)
    counts = Counter(r["state"] for r in rows)
    done = counts["COMPLETE"] + counts["PRUNED"]
    try:
        target: Any = target_trials(spec)
    except Exception:  # noqa: BLE001 - status works without n_trials
        target = "?"
    lines = [f"sweep {spec.name}  storage {redact_url(url)}  (watch: {' '.join(dashboard_command(url))})",
             f"finished {done}/{target} ({', '.join(f'{k.lower()} {v}' for k, v in sorted(counts.items()))})",
             ""]  # fmt: skip
    lines += _table(rows, list(spec.space))
    best = best_of(study)
    lines.append("")
    if best:
        label = "best" if len(best) == 1 else f"Pareto front ({len(best)} trials)"
        lines.append(f"{label} ({', '.join(f'{o.metric} {o.direction}' for o in spec.objective)}):")
        for t in best:
            values = ", ".join(_fmt(v) for v in t.values)
            lines.append(f"  trial {t.number}: {values}  {json.dumps(t.params)}")
    else:
        lines.append("best: no complete trial yet")
    failures = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failures:
        lines += ["", f"failures ({len(failures)}):"]
        for t in failures:
            error = (t.user_attrs.get(ERROR_ATTR) or "stale: no heartbeat (worker lost), re-enqueued").splitlines()[0]
            lines.append(f"  trial {t.number}: {error}")
    return "\n".join(lines)
