"""A scheduler's stop signals (SLURM sends SIGTERM on scancel, preemption and at the time limit) end training like
Ctrl-C: the current step boundary is checkpointed, the lock released, one line, exit 128 + signum (143 for
SIGTERM). A handler someone else installed (submitit's, in its job environment) is left alone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from softclip import checkpoint as ckpt
from softclip.cli import describe_error
from softclip.objective import SoftCLIPObjective
from softclip.runfiles import LOCK
from softclip.train import train
from softclip.train.errors import TrainingInterrupted
from softclip.train.loop import STOP_SIGNALS, stop_signals_raise

from .conftest import smoke_config


@pytest.fixture(autouse=True)
def default_handlers():
    """The default action for every stop signal, whatever the test process inherited."""
    old = {sig: signal.signal(sig, signal.SIG_DFL) for sig in STOP_SIGNALS}
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP])
def test_a_stop_signal_mid_step_checkpoints_releases_the_lock_and_exits_128_plus_signum(
    smoke_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int
) -> None:
    cfg = smoke_config(smoke_data, {"train": {"steps": 6, "ckpt_every": 100}})
    original, calls = SoftCLIPObjective.forward, {"n": 0}

    def forward(self, *args, **kwargs):  # the signal lands inside step 3's forward pass
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), sig)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SoftCLIPObjective, "forward", forward)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as err:
        train(cfg, run)
    code, line = describe_error(err.value)
    assert code == 128 + sig and (sig != signal.SIGTERM or code == 143)
    name = signal.Signals(sig).name
    assert line.startswith(f"training interrupted at step 2 by {name}; checkpoint ") and "\n" not in line
    assert f"--run-dir {run})" in line
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(run / "checkpoints", 2))["step"] == 2
    assert not (run / LOCK).exists() and not (run / "done.json").exists()
    assert all(signal.getsignal(s) is signal.SIG_DFL for s in STOP_SIGNALS)  # restored


def test_a_handler_installed_by_someone_else_is_left_alone() -> None:
    calls: list[int] = []
    signal.signal(signal.SIGUSR2, lambda signum, _frame: calls.append(signum))  # as submitit's job environment
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with stop_signals_raise():
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(1000):  # bytecode boundaries at which the handler runs
            pass
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(1000):
                pass
    assert calls == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_a_stop_signal_before_the_first_step_releases_the_lock(smoke_data: Path, tmp_path: Path) -> None:
    from softclip.train.errors import SignalReceived

    run = tmp_path / "run"
    with pytest.raises(SignalReceived) as err:  # e.g. scancel while the evaluation data is being checked
        train(smoke_config(smoke_data), run, preflight=lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, line = describe_error(err.value)
    assert code == 143 and line.startswith("interrupted by SIGTERM outside a training step")
    assert not (run / LOCK).exists() and not (run / "metrics.jsonl").exists()


def test_a_stop_signal_while_the_lock_is_taken_still_releases_it(
    smoke_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by sending SIGTERM the moment lock.json appeared: the signal landed inside acquire(), before the lock
    was bound to a name, and the lock was left behind."""
    from softclip.train.errors import SignalReceived
    from softclip.train.lock import RunLock

    acquire = RunLock.acquire

    def acquire_then_signal(self):
        held = acquire(self)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before acquire() has returned
        for _ in range(1000):
            pass
        return held

    monkeypatch.setattr(RunLock, "acquire", acquire_then_signal)
    run = tmp_path / "run"
    with pytest.raises(SignalReceived):
        train(smoke_config(smoke_data), run)
    assert not (run / LOCK).exists()
