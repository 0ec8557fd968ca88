"""``signals_deferred``: Ctrl-C and the preemption signals that arrive inside the block are held until it is done
(the CI failure it fixes: Ctrl-C landed inside ``torch.save``, the zip writer then raised a RuntimeError, and the
run exited 1 instead of checkpointing and exiting 130)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from softclip.train.loop import signals_deferred


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Python's own Ctrl-C handler, whatever the test process inherited (under nohup or CI SIGINT is ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def usr2_calls():
    calls: list[int] = []
    old = signal.signal(signal.SIGUSR2, lambda signum, _frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGUSR2, old)


def test_ctrl_c_inside_the_block_is_raised_after_it_and_the_block_finishes():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # twice: raised once
            done.append("written")
    assert done == ["written"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_signal_sent_from_another_thread_is_held_too(usr2_calls):
    with signals_deferred():
        sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR2))
        sender.start()
        sender.join()
        for _ in range(1000):  # give the interpreter bytecode boundaries at which it would run a handler
            pass
        assert usr2_calls == []
    assert usr2_calls == [signal.SIGUSR2]


def test_no_signal_no_effect_and_an_ignored_signal_stays_ignored(usr2_calls):
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with signals_deferred():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: nothing happens, inside or after
        assert usr2_calls == []
    finally:
        signal.signal(signal.SIGTERM, old)


def test_outside_the_main_thread_it_is_a_no_op():
    seen = []

    def body():
        with signals_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]
