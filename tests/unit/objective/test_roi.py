"""ROI aggregators: registry-driven invariances, the zero-region contract, gradients, brute-force pooling."""

from __future__ import annotations

import pytest
import torch

from softclip.objective import AGGREGATORS, build_aggregator, list_aggregators
from softclip.registry import RegistryError
from softclip.schema import RoiConfig

N, K, D = 6, 5, 12
COUNTS = [3, 0, 5, 1, 2, 0]  # regions per image; two images without regions
CASES = [(name, train) for name in AGGREGATORS.names() for train in ("learn", "frozen")]
POOLING = {"mean": torch.mean, "max": lambda x, dim: x.amax(dim), "min": lambda x, dim: x.amin(dim)}


def _inputs(seed: int = 0, k: int = K, counts: list[int] = COUNTS) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(len(counts), k, D, generator=g)
    mask = torch.zeros(len(counts), k, dtype=torch.bool)
    for i, c in enumerate(counts):
        mask[i, torch.randperm(k, generator=g)[:c]] = True  # valid slots scattered, not a prefix
    regions[~mask] = torch.randn(int((~mask).sum()), D, generator=g) * 1e3  # garbage padding
    return regions, mask


def _build(name: str, train: str = "learn", out_dim: int | None = None) -> torch.nn.Module:
    torch.manual_seed(1)
    agg = build_aggregator(RoiConfig(aggregation=name, width=16, heads=2, layers=2, train=train), D, out_dim)
    return agg.eval()


def test_registry_lists_the_paper_modes() -> None:
    assert {"mean", "max", "min", "mhsa"} <= set(list_aggregators())
    assert list_aggregators() == AGGREGATORS.names()
    with pytest.raises(ValueError, match="mhsa"):  # the section refuses an unknown mode, naming the choices
        RoiConfig(aggregation="mhsaa")
    with pytest.raises(RegistryError, match="mhsa"):  # and so does the builder, should one slip past it
        build_aggregator(RoiConfig.model_construct(aggregation="mhsaa"), D)
    with pytest.raises(ValueError, match="train"):
        RoiConfig(aggregation="mean", train="finetune")


@pytest.mark.parametrize(("name", "train"), CASES)
def test_shapes_and_zero_region_rows(name: str, train: str) -> None:
    agg = _build(name, train)
    regions, mask = _inputs()
    feats, valid = agg(regions, mask)
    assert feats.shape == (N, agg.out_dim) and feats.dtype == torch.float32
    assert valid.tolist() == [c > 0 for c in COUNTS]
    assert torch.isfinite(feats).all()
    assert (feats[~valid] == 0).all()
    assert feats[valid].abs().sum(dim=1).gt(0).all()


@pytest.mark.parametrize(("name", "train"), CASES)
def test_batch_without_any_region(name: str, train: str) -> None:
    agg = _build(name, train)
    for k in (0, 3):
        feats, valid = agg(torch.full((3, k, D), float("nan")), torch.zeros(3, k, dtype=torch.bool))
        assert feats.shape == (3, agg.out_dim)
        assert not valid.any() and (feats == 0).all()


@pytest.mark.parametrize(("name", "train"), CASES)
def test_invariant_to_region_order(name: str, train: str) -> None:
    agg = _build(name, train)
    regions, mask = _inputs(seed=3)
    ref, _ = agg(regions, mask)
    g = torch.Generator().manual_seed(4)
    perm = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])  # a different order per image
    feats, valid = agg(regions.gather(1, perm.unsqueeze(-1).expand(-1, -1, D)), mask.gather(1, perm))
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    assert valid.tolist() == [c > 0 for c in COUNTS]


@pytest.mark.parametrize(("name", "train"), CASES)
def test_invariant_to_padding_whatever_it_holds(name: str, train: str) -> None:
    agg = _build(name, train)
    regions, mask = _inputs(seed=5)
    ref, _ = agg(regions, mask)
    for fill in (0.0, 1e6, -1e6, float("inf"), float("-inf"), float("nan")):
        extra = torch.full((N, 4, D), fill)
        padded = torch.cat([regions.masked_fill(~mask.unsqueeze(-1), fill), extra], dim=1)
        padded_mask = torch.cat([mask, torch.zeros(N, 4, dtype=torch.bool)], dim=1)
        feats, _ = agg(padded, padded_mask)
        torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5, msg=f"padding filled with {fill}")


@pytest.mark.parametrize("name", sorted(POOLING))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooling_equals_a_per_image_loop(name: str, seed: int) -> None:
    agg = build_aggregator(RoiConfig(aggregation=name), D, out_dim=7)  # pooling keeps the region dimension
    assert agg.out_dim == D and not agg.learns and not list(agg.parameters())
    regions, mask = _inputs(seed=seed)
    feats, _ = agg(regions, mask)
    for i in range(N):
        expected = POOLING[name](regions[i][mask[i]], dim=0) if mask[i].any() else torch.zeros(D)
        torch.testing.assert_close(feats[i], expected, atol=1e-6, rtol=1e-6)


def test_mhsa_learns_with_gradients_even_with_nan_padding_and_empty_images() -> None:
    agg = _build("mhsa", "learn", out_dim=10)
    assert agg.learns and agg.out_dim == 10
    agg.train()
    regions, mask = _inputs(seed=6)
    regions[~mask] = float("nan")
    feats, valid = agg(regions.requires_grad_(), mask)
    feats.square().sum().backward()
    for name, p in agg.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert agg.proj_in.weight.grad.abs().sum() > 0 and agg.proj_out.weight.grad.abs().sum() > 0
    assert torch.isfinite(regions.grad).all() and (regions.grad[~mask] == 0).all()


def test_mhsa_out_dim_defaults_to_width() -> None:
    assert build_aggregator(RoiConfig(aggregation="mhsa", width=32, heads=4), D).out_dim == 32
    with pytest.raises(ValueError, match="divisible"):
        build_aggregator(RoiConfig(aggregation="mhsa", width=30, heads=4), D)


def test_mhsa_frozen_is_a_fixed_seeded_projection_without_gradients() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_aggregator(RoiConfig(aggregation="mhsa", width=16, heads=2, dropout=0.5, train="frozen"), D)
    assert torch.equal(torch.get_rng_state(), state), (
        "building a frozen aggregator must not move the global RNG"
    )
    torch.manual_seed(456)
    b = build_aggregator(RoiConfig(aggregation="mhsa", width=16, heads=2, dropout=0.5, train="frozen"), D)
    assert not a.learns
    assert all(not p.requires_grad for p in a.parameters()) and list(a.parameters())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    regions, mask = _inputs(seed=7)
    a.train()  # dropout is forced off when frozen: train mode is deterministic too
    feats, _ = a(regions, mask)
    torch.testing.assert_close(feats, a(regions, mask)[0])
    assert not feats.requires_grad


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_proj_is_the_masked_mean_through_a_learned_linear_map(seed: int) -> None:
    """``mean_proj``: the auxiliary loss on without a learned aggregator (no interaction between regions)."""
    agg = _build("mean_proj", "learn", out_dim=7)
    assert agg.learns and agg.out_dim == 7
    regions, mask = _inputs(seed=seed)
    feats, valid = agg(regions, mask)
    for i in range(N):
        want = agg.proj(regions[i][mask[i]].mean(0)) if mask[i].any() else torch.zeros(7)
        torch.testing.assert_close(feats[i], want, atol=1e-5, rtol=1e-5)
    feats.square().sum().backward()
    assert agg.proj.weight.grad.abs().sum() > 0
    assert build_aggregator(RoiConfig(aggregation="mean_proj", width=32), D).out_dim == 32


def test_mean_proj_frozen_is_a_fixed_seeded_projection_without_gradients() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_aggregator(RoiConfig(aggregation="mean_proj", train="frozen"), D, out_dim=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    b = build_aggregator(RoiConfig(aggregation="mean_proj", train="frozen"), D, out_dim=5)
    assert not a.learns and all(not p.requires_grad for p in a.parameters())
    assert torch.equal(a.proj.weight, b.proj.weight)
