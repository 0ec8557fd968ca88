"""train.host_memory: the heap settings it asks glibc for, and that it never makes a run a different run."""

from __future__ import annotations

import platform

import pytest

from softclip.config import Config
from softclip.identity import run_identity
from softclip.train.hostmem import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, configure_host_memory
from softclip.train.rundir import config_diff


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param, value) -> int:  # ctypes.c_int arguments, as glibc receives them
        self.calls.append((param.value, value.value))
        return self.answer


def test_retain_raises_the_mmap_threshold_to_glibcs_maximum_and_stops_trimming():
    libc = FakeLibc()
    assert configure_host_memory("retain", libc=libc) is True
    assert dict(libc.calls) == {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30}


def test_system_leaves_the_heap_alone():
    libc = FakeLibc()
    assert configure_host_memory("system", libc=libc) is False
    assert libc.calls == []


def test_a_refused_setting_is_reported_as_not_applied():
    assert configure_host_memory("retain", libc=FakeLibc(answer=0)) is False


def test_an_unknown_mode_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="train.host_memory: 'huge'"):
        configure_host_memory("huge", libc=FakeLibc())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_this_glibc_accepts_the_settings():
    assert configure_host_memory("retain") is True


def test_the_mode_does_not_change_a_runs_identity_or_block_its_resumption():
    retain = Config.model_validate({"name": "r"}).to_dict()
    system = Config.model_validate({"name": "r", "train": {"host_memory": "system"}}).to_dict()
    assert retain["train"]["host_memory"] == "retain"
    assert config_diff(retain, system) == []
    older = {**retain, "train": {k: v for k, v in retain["train"].items() if k != "host_memory"}}
    assert config_diff(older, system) == []  # a run folder written before the key existed
    assert run_identity(retain) == run_identity(system) == run_identity(older)
    assert config_diff(retain, {**system, "seed": retain["seed"] + 1}) != []  # the free key frees only itself
