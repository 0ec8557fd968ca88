"""Divergences: values against plain formulas, KL >= 0 and = 0 at P = Y, derivatives against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from softclip.objective import DIVERGENCES, list_divergences
from softclip.objective.divergences import TargetRows
from softclip.registry import RegistryError

R, C = 4, 6


def _target(seed: int = 0, zeros: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.softmax(3 * torch.randn(R, C, generator=g, dtype=torch.float64), dim=1)
    if zeros:  # exact zeros (hard / masked columns) and one one-hot row
        y[0, 1] = 0.0
        y[1] = torch.eye(C, dtype=torch.float64)[2]
        y[2, :3] = 1e-12  # below the 1e-8 floor
        y = y / y.sum(1, keepdim=True)
    return y


def _log_p(seed: int = 1, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(R, C, generator=g, dtype=torch.float64), dim=1)


def _prepared(y: torch.Tensor, mark_single: bool = False) -> TargetRows:
    return TargetRows.from_log(y.clone(), torch.log(y), torch.empty_like(y), 1e-8, mark_single)


def _rows(name: str, y: torch.Tensor, log_p: torch.Tensor, need_grad: bool = False, mark_single: bool = False):
    target = _prepared(y, mark_single)
    return DIVERGENCES.get(name)(target, log_p, log_p.exp(), need_grad, torch.empty_like(y))


def _reference(name: str, y: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    kl = (torch.xlogy(y, y) - y * log_p).sum(1)
    reverse = (log_p.exp() * (log_p - torch.log(y.clamp_min(1e-8)))).sum(1)
    return {"kl": kl, "symkl": kl + reverse, "ce": -(y * log_p).sum(1)}[name]


def test_registry_lists_the_documented_choices():
    assert list_divergences() == ["ce", "kl", "symkl"]
    with pytest.raises(RegistryError, match="symkl"):
        DIVERGENCES.get("symk")


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_values_match_the_plain_formulas(name):
    y, log_p = _target(), _log_p()
    rows, grad = _rows(name, y, log_p)
    assert grad is None
    torch.testing.assert_close(rows, _reference(name, y, log_p))


@pytest.mark.parametrize("name", ["kl", "symkl"])
def test_kl_is_nonnegative_and_zero_at_the_target(name):
    for seed in range(5):
        y, log_p = _target(seed), _log_p(seed + 10, scale=5.0)
        assert (_rows(name, y, log_p)[0] >= -1e-12).all()
    y = _target(zeros=False)
    rows, _ = _rows(name, y, torch.log(y))
    torch.testing.assert_close(rows, torch.zeros(R, dtype=torch.float64), atol=1e-12, rtol=0)


def test_cross_entropy_is_kl_plus_target_entropy():
    y, log_p = _target(), _log_p()
    entropy = -torch.xlogy(y, y).sum(1)
    torch.testing.assert_close(_rows("ce", y, log_p)[0], _rows("kl", y, log_p)[0] + entropy)


def test_zero_log_zero_and_the_floor():
    y = _target()
    target = _prepared(y)
    torch.testing.assert_close(target.neg_entropy, torch.xlogy(y, y).sum(1))
    torch.testing.assert_close(target.log_y, torch.log(y.clamp_min(1e-8)))
    floored = TargetRows.from_log(y.clone(), torch.log(y), torch.empty_like(y), 1e-3, False)
    torch.testing.assert_close(floored.log_y, torch.log(y.clamp_min(1e-3)))


def test_one_hot_rows_keep_only_the_forward_term():
    """loss.one_hot_rows: forward — on the one-hot row 1, symkl is KL(Y || P) = −log p of the positive."""
    y, log_p = _target(), _log_p()
    assert _prepared(y, mark_single=True).single.tolist() == [False, True, False, False]
    rows, _ = _rows("symkl", y, log_p, mark_single=True)
    torch.testing.assert_close(rows[1], -log_p[1, 2])
    floored, _ = _rows("symkl", y, log_p)
    torch.testing.assert_close(rows[[0, 2, 3]], floored[[0, 2, 3]])
    assert float(floored[1] - rows[1]) > 0  # the floor's penalty, about 18.4·(1 − p)


@pytest.mark.parametrize("name", DIVERGENCES.names())
@pytest.mark.parametrize("mark_single", [False, True])
def test_derivative_matches_finite_differences(name, mark_single):
    """d rows / d log_p, with p = exp(log_p) moving along (central differences, float64)."""
    y, log_p = _target(), _log_p()
    _, grad = _rows(name, y, log_p, need_grad=True, mark_single=mark_single)
    eps = 1e-6
    numeric = torch.zeros_like(log_p)
    for r in range(R):
        for c in range(C):
            hi, lo = log_p.clone(), log_p.clone()
            hi[r, c] += eps
            lo[r, c] -= eps
            diff = _rows(name, y, hi, mark_single=mark_single)[0] - _rows(name, y, lo, mark_single=mark_single)[0]
            numeric[r, c] = diff[r] / (2 * eps)
    torch.testing.assert_close(grad, numeric, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_extreme_predictions_stay_finite(name):
    y = _target()
    log_p = torch.log_softmax(1e4 * torch.randn(R, C, dtype=torch.float64), dim=1)  # p is 0 or 1
    rows, grad = _rows(name, y, log_p, need_grad=True)
    assert torch.isfinite(rows).all() and torch.isfinite(grad).all()
    assert not math.isnan(float(rows.sum()))
