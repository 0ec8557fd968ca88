"""The oracle's precision knob (``loss.oracle_precision``) and the target-precision diagnostics: p = 1 is the
oracle bit for bit, p = 0 puts nothing on true matches, ``share`` is uniform off-diagonal smoothing; the measured
precision of the oracle is 1 (p = 1) and 0 (p = 0), of label smoothing the batch's true share."""

from __future__ import annotations

import math

import pytest
import torch

from softclip.config import ConfigError, load_config
from softclip.objective import SideInputs, SoftCLIPObjective
from softclip.objective.precision import target_precision, true_share
from softclip.objective.targets import (
    SideView,
    build_targets,
    compose_target,
    label_smoothing_target,
    oracle_target,
)
from softclip.train.target_result import step_averages
from tests.unit.objective.scenes import codes, relevant

NEG_INF = float("-inf")


def _today(rel: torch.Tensor, dtype: torch.dtype, col_valid: torch.Tensor | None = None) -> torch.Tensor:
    """The oracle before the knob, written out: uniform over the valid true matches, one-hot rows matching none."""
    rel = rel if col_valid is None else rel & col_valid.unsqueeze(0)
    count = rel.sum(1, keepdim=True)
    log_q = torch.where(rel, -count.clamp_min(1).to(dtype).log(), NEG_INF)
    empty = (count.squeeze(1) == 0).nonzero().squeeze(1)
    log_q[empty, empty] = 0.0
    return log_q


def _side(rel: torch.Tensor, p, dtype=torch.float64, col_valid=None) -> SideView:
    n = rel.shape[0]
    z = torch.zeros(n, 1, dtype=dtype)
    return SideView(z, z, col_valid=col_valid, relevant=rel, oracle_precision=p)


def _rel(n: int = 24, seed: int = 0) -> torch.Tensor:
    rel = relevant(n, seed)[0].clone()
    rel[0] = False  # a row that matches nothing (a noisy caption)
    rel[1] = False
    rel[1, 1] = True  # a row that matches only itself
    rel[2] = True  # a row that every column matches (no non-match)
    return rel


def _off(n: int) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("masked", [False, True])
def test_precision_one_is_todays_oracle_bit_for_bit(dtype, masked):
    rel = _rel()
    valid = (torch.arange(len(rel)) % 5 != 3) if masked else None
    assert torch.equal(oracle_target(_side(rel, 1.0, dtype, valid), 0.07), _today(rel, dtype, valid))
    assert torch.equal(oracle_target(_side(rel, 1, dtype, valid), 0.07), _today(rel, dtype, valid))


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.75, 0.999, "share"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rows_are_distributions_and_keep_the_oracles_diagonal_and_off_diagonal_mass(p, dtype):
    rel = _rel()
    q = oracle_target(_side(rel, p, dtype), 0.07).exp().double()
    today = _today(rel, torch.float64).exp()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(q.sum(1), torch.ones(len(rel), dtype=torch.float64), rtol=0, atol=tol)
    torch.testing.assert_close(q.diagonal(), today.diagonal(), rtol=0, atol=tol)
    assert (q >= 0).all()


def test_float32_agrees_with_float64():
    rel = _rel()
    for p in (0.0, 0.3, "share"):
        q32 = oracle_target(_side(rel, p, torch.float32), 0.07).exp().double()
        q64 = oracle_target(_side(rel, p, torch.float64), 0.07).exp()
        torch.testing.assert_close(q32, q64, rtol=0, atol=1e-6)


def test_precision_zero_puts_no_off_diagonal_mass_on_true_matches():
    rel = _rel()
    q = oracle_target(_side(rel, 0.0), 0.07).exp()
    off = _off(len(rel))
    rows = torch.arange(3, len(rel))  # rows with both true matches and non-matches off the diagonal
    has_both = ((rel & off).any(1) & (~rel & off).any(1))[rows]
    assert has_both.any()
    assert float((q * (rel & off))[rows[has_both]].sum()) == 0.0
    # the edge rows: nothing to move (one-hot) or nowhere else to go (all on true matches, today's row)
    today = _today(rel, torch.float64).exp()
    assert torch.equal(q[:2], today[:2])
    torch.testing.assert_close(q[2], today[2], rtol=0, atol=1e-15)


def test_share_is_uniform_over_the_off_diagonal_columns():
    rel = _rel()
    q = oracle_target(_side(rel, "share"), 0.07).exp()
    today = _today(rel, torch.float64).exp()
    off = _off(len(rel))
    for i in range(len(rel)):
        m = float((today[i] * off[i]).sum())
        want = torch.full((len(rel) - 1,), m / (len(rel) - 1), dtype=torch.float64)
        torch.testing.assert_close(q[i][off[i]], want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_measured_precision_of_the_oracle_is_its_knob(p):
    """Per row with both sets: precision p; the all-match row: 1 (its leftover mass has nowhere else to go)."""
    rel = _rel()
    log_y = compose_target(oracle_target(_side(rel, p), 0.07), 0.3, None, 0)
    off = _off(len(rel))
    both = (rel & off).any(1) & (~rel & off).any(1)
    only_true = (rel & off).any(1) & ~(~rel & off).any(1)
    n_both, n_only = int(both.sum()), int(only_true.sum())
    want = (p * n_both + n_only) / (n_both + n_only)
    assert float(target_precision(log_y, rel)) == pytest.approx(want, abs=1e-12)


def test_measured_precision_of_label_smoothing_is_the_true_share():
    rel = relevant(24)[0]
    side = SideView(torch.zeros(24, 1, dtype=torch.float64), torch.zeros(24, 1, dtype=torch.float64))
    log_y = compose_target(label_smoothing_target(side, 0.07).clone(), 0.2, None, 0)
    share = float(true_share(rel, dtype=torch.float64))
    assert 0.0 < share < 1.0
    assert float(target_precision(log_y, rel)) == pytest.approx(share, abs=1e-12)


def test_precision_of_rows_without_off_diagonal_mass_is_nan_and_blocks_keep_their_offset():
    log_eye = torch.full((3, 3), NEG_INF, dtype=torch.float64).fill_diagonal_(0.0)
    assert math.isnan(float(target_precision(log_eye, torch.ones(3, 3, dtype=torch.bool))))
    # a rectangular block of local rows 2..3 (offset 2) of 5 global columns: the diagonal sits at column 2 + i
    log_y = torch.log(
        torch.tensor([[0.1, 0.2, 0.5, 0.2, 0.0], [0.0, 0.0, 0.0, 0.5, 0.5]], dtype=torch.float64)
    )
    rel = torch.tensor([[True, False, True, False, False], [False, False, False, True, True]])
    assert float(target_precision(log_y, rel, offset=2)) == pytest.approx(0.5 * (0.2 + 1.0), abs=1e-12)
    assert float(true_share(rel, offset=2, dtype=torch.float64)) == pytest.approx(2 / 8)


def _objective_precision(target: str, **kwargs) -> dict[str, float]:
    n = 24
    image, caption = codes(n)
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)
    out = SoftCLIPObjective(target, **kwargs)(u, v, torch.tensor(5.0, dtype=torch.float64),
                                              side=SideInputs(image_scene=image, text_scene=caption))  # fmt: skip
    return {
        k: float(v) for k, v in out.items() if k.startswith("target_precision") or k == "target_true_share"
    }


def test_objective_logs_target_precision_for_soft_targets_only():
    assert _objective_precision("hard") == {}
    assert _objective_precision("label_smoothing", beta=0.0) == {}  # Y = I: no off-diagonal mass
    ls = _objective_precision("label_smoothing")
    assert ls["target_precision_i2t"] == pytest.approx(ls["target_true_share"], abs=1e-12)
    assert ls["target_precision_t2i"] == pytest.approx(ls["target_true_share"], abs=1e-12)
    oracle = _objective_precision("oracle")
    assert oracle["target_precision_i2t"] == 1.0 and oracle["target_precision_t2i"] == 1.0
    zero = _objective_precision("oracle", oracle_precision=0.0)
    assert zero["target_precision_i2t"] < 0.05 and zero["target_precision_t2i"] < 0.05  # all-match rows only
    selfsim = _objective_precision("selfsim")
    assert 0.0 < selfsim["target_precision_i2t"] < 1.0


def test_knob_reaches_the_targets_through_the_objective():
    rel_i2t, rel_t2i = relevant(12)
    z = torch.zeros(12, 1, dtype=torch.float64)
    views = (
        SideView(z, z, relevant=rel_i2t, oracle_precision=0.5),
        SideView(z, z, relevant=rel_t2i, oracle_precision=0.5),
    )
    y_i2t, _ = build_targets(*views, "oracle", "same", 0.3, 0.07, 0)
    want = compose_target(oracle_target(views[0], 0.07), 0.3, None, 0)
    torch.testing.assert_close(y_i2t, want, rtol=0, atol=0)


def test_step_averages_of_the_logged_diagnostics():
    records = [
        {"kind": "train", "step": 10, "target_precision_i2t": 0.2, "target_precision_t2i": 0.4, "target_true_share": 0.1},
        {"kind": "train", "step": 20, "target_precision_i2t": 0.4, "target_precision_t2i": None, "target_true_share": 0.3},
        {"kind": "eval", "step": 20, "target_precision_i2t": 9.0},
        {"kind": "train", "step": 20, "target_precision_i2t": 0.6, "target_precision_t2i": 0.8, "target_true_share": 0.3},
    ]  # fmt: skip
    got = step_averages(records)
    assert got == pytest.approx(
        {"precision_i2t": 0.4, "precision_t2i": 0.6, "true_share": 0.2, "precision": 0.5}
    )
    assert step_averages([{"kind": "train", "step": 1, "loss": 1.0}]) == {}


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_bad_oracle_precision_is_a_config_error_naming_the_key(value):
    with pytest.raises(ConfigError, match="oracle_precision"):
        load_config("ablations/base.yaml", [f"loss.oracle_precision={str(value).lower()}"])
    with pytest.raises(ValueError, match="oracle_precision"):
        SoftCLIPObjective("oracle", oracle_precision=value)


def test_config_accepts_numbers_and_share():
    assert (
        load_config("ablations/base.yaml", ["loss.oracle_precision=share"]).loss.oracle_precision == "share"
    )
    assert load_config("ablations/base.yaml", ["loss.oracle_precision=0.25"]).loss.oracle_precision == 0.25
    with pytest.raises(ConfigError, match="re_divergence"):
        load_config("ablations/base.yaml", ["loss.re_divergence=klx"])
    assert load_config("ablations/base.yaml", ["loss.re_divergence=ce"]).loss.re_divergence == "ce"
