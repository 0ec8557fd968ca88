"""Faults injected into real ``softclip train`` processes: a second trainer on a folder in use is refused (exit
2, the owner named, nothing of the first run touched); Ctrl-C checkpoints the current step, prints how to
resume and exits 130 without a traceback; the printed command resumes the run to its end. SIGTERM (what SLURM
sends on scancel, preemption and at the time limit) does the same with exit 143, and the resumed run ends
bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from softclip.checkpoint import checkpoint_path, load_checkpoint
from softclip.train.lock import LOCK
from softclip.train.metrics import TIMING_KEYS, read_metrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SOFTCLIP = [sys.executable, "-m", "softclip.cli"]
STEPS = 300


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [*SOFTCLIP, "train", str(REPO / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir",
            str(run_dir), "--no-eval", f"train.steps={STEPS}", "train.ckpt_every=10", "train.eval_every=0",
            "train.threads=1", *extra]  # fmt: skip


def wait_for_checkpoint(proc: subprocess.Popen) -> None:
    """Read the trainer's log until it reports its first checkpoint (it then has ~290 steps still to go)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "INFO softclip.train: checkpoint " in line:
            return
    pytest.fail(f"the trainer exited ({proc.wait()}) before its first checkpoint:\n{''.join(seen)[-3000:]}")


def test_second_trainer_is_refused_and_ctrl_c_checkpoints_and_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(train_cmd(run), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        wait_for_checkpoint(first)
        owner = json.loads((run / LOCK).read_text())
        assert owner["pid"] == first.pid
        config_before = (run / "config.yaml").read_bytes()

        second = subprocess.run(train_cmd(run, "seed=7"), cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=240)  # fmt: skip
        assert second.returncode == 2, second.stderr[-2000:]
        err = [ln for ln in second.stderr.splitlines() if ln.startswith("softclip:")]
        assert len(err) == 1 and "Traceback" not in second.stderr
        assert f"{run} is in use by another trainer" in err[0] and f"pid {first.pid}" in err[0]
        assert (run / "config.yaml").read_bytes() == config_before  # the second wrote nothing
        assert json.loads((run / LOCK).read_text())["token"] == owner["token"]

        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("softclip: training interrupted at step ") and "Resume with the same command" in last
    step = int(last.split("interrupted at step ")[1].split(";")[0])
    assert 0 < step < STEPS and f"step_{step:08d}.pt holds step {step}" in last
    assert (run / "checkpoints" / f"step_{step:08d}.json").is_file()
    assert not (run / LOCK).exists() and not (run / "done.json").exists()

    resume = last.split("(or: ")[1].rstrip(")").split()  # softclip train RUN/config.yaml --run-dir RUN
    assert resume[:2] == ["softclip", "train"]
    done = subprocess.run([*SOFTCLIP, *resume[1:], "--no-eval"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {run / 'checkpoints' / f'step_{step:08d}.pt'}" in done.stderr
    assert json.loads((run / "done.json").read_text())["step"] == STEPS


def wait_for_logged_step(proc: subprocess.Popen, metrics: Path) -> None:
    """Poll ``metrics.jsonl`` until the trainer has logged a training step (no fixed sleep decides anything)."""
    while proc.poll() is None:
        if metrics.is_file() and '"kind": "train"' in metrics.read_text():
            return
        time.sleep(0.01)
    pytest.fail(f"the trainer exited ({proc.returncode}) before it logged a step")


def untimed(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(path)]


def test_sigterm_checkpoints_exits_143_and_resumes_bit_exact(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    def cmd(run_dir: Path) -> list[str]:  # 40 steps, each logged, one checkpoint at the end
        return [*SOFTCLIP, "train", str(REPO / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir",
                str(run_dir), "--no-eval", "train.steps=40", "train.log_every=1", "train.ckpt_every=1000",
                "train.eval_every=0", "train.threads=1"]  # fmt: skip

    run = tmp_path / "run"
    proc = subprocess.Popen(cmd(run), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_logged_step(proc, run / "metrics.jsonl")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("softclip:")]
    assert len(lines) == 1 and lines[0] == stderr.strip().splitlines()[-1], stderr[-3000:]
    last = lines[0]
    assert last.startswith("softclip: training interrupted at step ") and " by SIGTERM; " in last
    step = int(last.split("interrupted at step ")[1].split(" ")[0])
    assert 0 < step < 40 and f"step_{step:08d}.pt holds step {step}" in last
    assert load_checkpoint(checkpoint_path(run / "checkpoints", step))["step"] == step
    assert not (run / LOCK).exists() and not (run / "done.json").exists()

    resume = last.split("(or: ")[1].rstrip(")").split()  # softclip train RUN/config.yaml --run-dir RUN
    assert resume[:2] == ["softclip", "train"] and str(run) in resume
    done = subprocess.run([*SOFTCLIP, *resume[1:], "--no-eval"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    straight = tmp_path / "straight"
    ok = subprocess.run(cmd(straight), cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert ok.returncode == 0, ok.stderr[-3000:]
    final = checkpoint_path("checkpoints", 40)
    a, b = load_checkpoint(straight / final)["model"], load_checkpoint(run / final)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert untimed(run / "metrics.jsonl") == untimed(straight / "metrics.jsonl")
