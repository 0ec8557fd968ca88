"""Targets and pairings: rows are distributions, β = 0 is CLIP, masks, the closed forms, distributed offsets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from softclip.objective import PAIRINGS, TARGETS, SideView, build_targets, list_pairings, list_targets
from softclip.objective.reference import off_diagonal_rows
from softclip.objective.targets import compose_target
from softclip.registry import RegistryError
from tests.unit.objective.scenes import relevant, teacher

N, A, B = 7, 5, 3
IMAGE_MASK = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
TEXT_MASK = torch.tensor([1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
CASES = [(t, p) for t in TARGETS.names() for p in PAIRINGS.names()]


def _sides(masked: bool, seed: int = 0) -> tuple[SideView, SideView]:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(N, A, generator=g, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(N, B, generator=g, dtype=torch.float64), dim=1)
    ma, mb = (IMAGE_MASK, TEXT_MASK) if masked else (None, None)
    ra, rb = relevant(N, seed)  # for the oracle; the other targets ignore it
    ta, tb = _teacher_logits(seed)  # for the momentum target
    return SideView(a, a, ma, ma, ra, teacher_logits=ta), SideView(b, b, mb, mb, rb, teacher_logits=tb)


def _teacher_logits(seed: int = 0, scale: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(i2t, t2i) logits s·U_m V_mᵀ, s·V_m U_mᵀ of the stand-in teacher embeddings."""
    t = teacher(N, dim=4, seed=seed)
    u_m, v_m = t["image_teacher"], t["text_teacher"]
    return scale * u_m @ v_m.T, scale * v_m @ u_m.T


def _dense(log_y: torch.Tensor | None) -> torch.Tensor:
    """Y from log Y (None: the identity)."""
    return torch.eye(N, dtype=torch.float64) if log_y is None else log_y.exp()


def _probs(log_ys):
    return tuple(_dense(y) for y in log_ys)


def test_registries_list_the_documented_choices():
    assert list_targets() == ["hard", "label_smoothing", "momentum", "oracle", "selfsim"]
    assert list_pairings() == ["cross", "mean", "same"]
    with pytest.raises(RegistryError, match="selfsim"):
        TARGETS.get("selfsimm")


@pytest.mark.parametrize("target,pairing", CASES)
@pytest.mark.parametrize("masked", [False, True])
def test_rows_are_distributions(target, pairing, masked):
    a, b = _sides(masked)
    for y in _probs(build_targets(a, b, target, pairing, beta=0.4, tau=0.2, offset=0)):
        assert (y >= 0).all()
        torch.testing.assert_close(y.sum(1), torch.ones(N, dtype=torch.float64))


@pytest.mark.parametrize("target,pairing", CASES)
def test_beta_zero_is_the_hard_target(target, pairing):
    a, b = _sides(masked=True)
    assert build_targets(a, b, target, pairing, beta=0.0, tau=0.2, offset=0) == (None, None)
    log_q = torch.full((N, N), -math.log(N), dtype=torch.float64)
    assert compose_target(log_q, 0.0, None, 0) is None


@pytest.mark.parametrize("target,pairing", CASES)
def test_masked_samples_get_no_column_mass_and_one_hot_rows(target, pairing):
    a, b = _sides(masked=True)
    y_i2t, y_t2i = (_dense(y) for y in build_targets(a, b, target, pairing, beta=0.6, tau=0.3, offset=0))
    # which mask governs which direction: same -> (image, text), cross -> (text, image), mean -> either side
    masks = {"same": (IMAGE_MASK, TEXT_MASK), "cross": (TEXT_MASK, IMAGE_MASK)}
    both = IMAGE_MASK | TEXT_MASK
    for y, mask in zip((y_i2t, y_t2i), masks.get(pairing, (both, both)), strict=True):
        for j in (~mask).nonzero().flatten().tolist():
            torch.testing.assert_close(y[j], torch.eye(N, dtype=torch.float64)[j])  # own row one-hot
            others = torch.arange(N) != j
            assert (y[others, j] == 0).all()  # nobody else puts mass on it


def test_label_smoothing_closed_form():
    a, b = _sides(masked=False)
    beta = 0.3
    y, _ = _probs(build_targets(a, b, "label_smoothing", "same", beta=beta, tau=1.0, offset=0))
    expected = (1 - beta) * torch.eye(N, dtype=torch.float64) + beta / N
    torch.testing.assert_close(y, expected)


def test_label_smoothing_spreads_over_valid_columns_only():
    a, b = _sides(masked=True)
    y, _ = _probs(build_targets(a, b, "label_smoothing", "same", beta=0.5, tau=1.0, offset=0))
    valid = IMAGE_MASK.nonzero().flatten()
    n_valid = len(valid)
    i = int(valid[0])
    expected = torch.zeros(N, dtype=torch.float64)
    expected[valid] = 0.5 / n_valid
    expected[i] += 0.5
    torch.testing.assert_close(y[i], expected)


def test_selfsim_closed_form_and_cross_pairing():
    a, b = _sides(masked=False)
    beta, tau = 0.3, 0.15
    y_i2t, y_t2i = _probs(build_targets(a, b, "selfsim", "same", beta=beta, tau=tau, offset=0))
    eye = torch.eye(N, dtype=torch.float64)
    expect_a = (1 - beta) * eye + beta * torch.softmax(a.rows @ a.rows.T / tau, dim=1)
    expect_b = (1 - beta) * eye + beta * torch.softmax(b.rows @ b.rows.T / tau, dim=1)
    torch.testing.assert_close(y_i2t, expect_a)
    torch.testing.assert_close(y_t2i, expect_b)
    c_i2t, c_t2i = _probs(build_targets(a, b, "selfsim", "cross", beta=beta, tau=tau, offset=0))
    torch.testing.assert_close(c_i2t, expect_b)
    torch.testing.assert_close(c_t2i, expect_a)
    m_i2t, m_t2i = _probs(build_targets(a, b, "selfsim", "mean", beta=beta, tau=tau, offset=0))
    torch.testing.assert_close(m_i2t, 0.5 * (expect_a + expect_b))
    torch.testing.assert_close(m_t2i, m_i2t)


def test_mean_pairing_uses_the_valid_side_alone():
    a, b = _sides(masked=True)
    beta, tau = 0.5, 0.2
    y_mean, _ = _probs(build_targets(a, b, "selfsim", "mean", beta=beta, tau=tau, offset=0))
    y_a, y_b = _probs(build_targets(a, b, "selfsim", "same", beta=beta, tau=tau, offset=0))
    only_b = int((~IMAGE_MASK & TEXT_MASK).nonzero()[0])  # has tags, no regions
    only_a = int((IMAGE_MASK & ~TEXT_MASK).nonzero()[0])
    torch.testing.assert_close(y_mean[only_b], y_b[only_b])
    torch.testing.assert_close(y_mean[only_a], y_a[only_a])
    both = int((IMAGE_MASK & TEXT_MASK).nonzero()[0])
    torch.testing.assert_close(y_mean[both], 0.5 * (y_a[both] + y_b[both]))


@pytest.mark.parametrize("target,pairing", CASES)
def test_local_rows_against_global_columns_match_the_full_block(target, pairing):
    """What a rank computes (its rows, all columns, offset) is the matching slice of the full target."""
    a, b = _sides(masked=True)
    full = build_targets(a, b, target, pairing, beta=0.4, tau=0.2, offset=0)
    rows = slice(3, 6)

    def local(s: SideView) -> SideView:
        return SideView(s.rows[rows], s.cols, s.row_valid[rows], s.col_valid, s.relevant[rows],
                        teacher_logits=s.teacher_logits[rows])  # fmt: skip

    part = build_targets(local(a), local(b), target, pairing, beta=0.4, tau=0.2, offset=3)
    for y_full, y_part in zip(full, part, strict=True):
        if y_full is None:
            assert y_part is None
        else:
            torch.testing.assert_close(y_part, y_full[rows])


def test_small_tau_keeps_every_off_diagonal_entry_finite():
    """τ = 0.005: softmax(AAᵀ/τ) off the diagonal is far below float32's range; its logarithm is not."""
    a, b = _sides(masked=False)
    f32 = SideView(a.rows.float(), a.cols.float())
    log_y, _ = build_targets(f32, f32, "selfsim", "same", beta=0.3, tau=0.005, offset=0)
    assert (log_y.exp() == 0).any()  # linear space would lose these
    assert torch.isfinite(log_y).all() and off_diagonal_rows(log_y, 0).all()
    ref, _ = build_targets(a, a, "selfsim", "same", beta=0.3, tau=0.005, offset=0)
    torch.testing.assert_close(log_y.double(), ref, rtol=1e-5, atol=1e-3)


def test_off_diagonal_rows_and_masked_batches():
    a, b = _sides(masked=True)
    log_y, _ = build_targets(a, b, "label_smoothing", "same", beta=0.5, tau=1.0, offset=0)
    assert off_diagonal_rows(log_y, 0).tolist() == IMAGE_MASK.tolist()  # masked rows are one-hot
    none = torch.zeros(N, dtype=torch.bool)
    empty = SideView(a.rows, a.cols, none, none)
    for pairing in PAIRINGS.names():
        ys = build_targets(empty, b, "selfsim", pairing, beta=0.5, tau=0.2, offset=0)
        assert all(not torch.isnan(y).any() for y in ys)  # no valid column on A: −inf, never NaN
