"""Learning-rate schedule: warmup, cosine, floor, and the state check on resume."""

from __future__ import annotations

import math

import pytest
import torch

from softclip.train.schedule import CosineSchedule, cosine_lr


def test_warmup_is_linear_and_starts_moving() -> None:
    lrs = [cosine_lr(s, 1.0, warmup_steps=4, total_steps=20) for s in range(4)]
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_cosine_midpoint_and_floor() -> None:
    base, warm, total, floor = 2.0, 10, 110, 0.1
    assert cosine_lr(warm, base, warm, total, floor) == pytest.approx(base)
    mid = cosine_lr(warm + 50, base, warm, total, floor)
    assert mid == pytest.approx(base * (floor + (1 - floor) * 0.5))
    assert cosine_lr(total, base, warm, total, floor) == pytest.approx(base * floor)
    assert cosine_lr(total + 7, base, warm, total, floor) == pytest.approx(base * floor)
    assert cosine_lr(total - 1, base, warm, total, floor) > base * floor  # the last step still moves


def test_schedule_is_monotone_after_warmup() -> None:
    lrs = [cosine_lr(s, 1.0, 3, 50, 0.0) for s in range(3, 51)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert math.isclose(lrs[-1], 0.0, abs_tol=1e-12)


def test_no_warmup_starts_at_peak() -> None:
    assert cosine_lr(0, 0.5, 0, 10) == pytest.approx(0.5)


def test_apply_sets_every_group_with_scale() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1]}, {"params": [p2], "lr_scale": 0.5}], lr=9.0)
    sched = CosineSchedule(1.0, 2, 10)
    assert sched.apply(opt, 0) == pytest.approx(0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.25])


def test_state_dict_refuses_a_different_schedule() -> None:
    sched = CosineSchedule(1.0, 2, 10)
    sched.last_lr = 0.3
    other = CosineSchedule(1.0, 2, 10)
    other.load_state_dict(sched.state_dict())
    assert other.last_lr == 0.3
    with pytest.raises(ValueError, match="differs"):
        CosineSchedule(1.0, 2, 20).load_state_dict(sched.state_dict())
