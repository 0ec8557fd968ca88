"""Fast stand-ins for training, used by the launcher and sweep tests (no model, no data).

``quadratic_trial`` is a sweep trial function: a score that peaks at β=0.3, τ=0.07 with a pseudo learning
curve reported every ``train.eval_every`` steps. It checkpoints its step to ``run_dir/progress.json`` and
resumes from it, so kill/requeue tests can check that a resumed trial ends with the uninterrupted result.
``SOFTCLIP_FAKE_STEP_S`` (seconds per step) slows it down for those tests; ``loss.beta >= 0.95`` raises.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import yaml

from softclip.config import Config


def score(beta: float, tau: float) -> float:
    """The fake objective (maximum 1.0 at β=0.3, τ=0.07)."""
    return 1.0 - (beta - 0.3) ** 2 - 0.5 * math.log10(tau / 0.07) ** 2


def quadratic_trial(cfg: Config, run_dir: Path, report) -> dict[str, float]:
    if cfg.loss.beta >= 0.95:
        raise ValueError(f"fake divergence at beta={cfg.loss.beta}")
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = run_dir / "progress.json"
    state = json.loads(progress.read_text()) if progress.is_file() else {"step": 0, "starts": 0}
    state["starts"] += 1
    final = score(cfg.loss.beta, cfg.loss.tau) + 0.01 * cfg.seed
    steps, every = cfg.train.steps, cfg.train.eval_every or cfg.train.steps
    delay = float(os.environ.get("SOFTCLIP_FAKE_STEP_S", "0"))
    for step in range(state["step"] + 1, steps + 1):
        time.sleep(delay)
        state["step"] = step
        progress.write_text(json.dumps(state))
        if step % every == 0:
            report(step, {"synth/score": final * (1.0 - math.exp(-4.0 * step / steps))})
    result = {"synth/score": final, "synth/starts": float(state["starts"])}
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise RuntimeError(message)


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def crash() -> None:
    os._exit(3)


def environment() -> dict[str, str | int]:
    from softclip.launch import THREAD_ENV_VARS

    return {**{k: os.environ.get(k, "") for k in THREAD_ENV_VARS}, "pid": os.getpid()}


def dispatch(name: str, arg):
    return {"square": square, "fail": fail, "crash": lambda _: crash()}[name](arg)


def ablation_job(job) -> dict:
    """Stand-in for softclip.ablate.run_ablation_job: writes done.json and one result per benchmark."""
    from softclip.train.rundir import expected_benchmarks

    run_dir = Path(job.run_dir)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    for bench in expected_benchmarks(job.suite):
        (run_dir / "eval" / f"{bench}.json").write_text(json.dumps({"metrics": {"top1": 1.0}}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(job.config))
    (run_dir / "done.json").write_text("{}")
    return {"variant": job.variant, "seed": job.seed}


def dist_envs(folder: str) -> dict[str, str]:
    """Each task of a multi-task job writes its torch.distributed environment to ``folder/<rank>.json``."""
    env = {k: os.environ.get(k, "") for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{env['RANK']}.json").write_text(json.dumps(env))
    return env


def rendezvous(folder: str, name: str, limit_s: float = 120.0) -> dict:
    """Mark ``name`` started, wait (at most ``limit_s``) until every other task of the test has started too,
    and return this task's running interval, whether it met the others, and its environment. Two tasks that
    run one after the other cannot meet: the first gives up after ``limit_s`` and its interval ends before the
    second's starts."""
    start = time.time()
    (Path(folder) / f"started-{name}").write_text(str(start))
    deadline = time.monotonic() + limit_s
    met = False
    while time.monotonic() < deadline and not met:
        met = len(list(Path(folder).glob("started-*"))) >= 2
        time.sleep(0.05)
    return {"interval": (start, time.time()), "met": met, "env": environment()}
