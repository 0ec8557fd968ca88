"""ROI aggregators: per-image region features -> one image-side feature A (``roi.aggregation``).

SoftCLIP builds its image-side self-similarity targets from detector regions (VinVL: 2048-d appearance plus
6-d box geometry). Each image holds K <= Kmax regions; batches are padded to Kmax with a boolean mask.

Every aggregator is an ``nn.Module`` with the same contract::

    features, valid = agg(regions [N, Kmax, D] float, mask [N, Kmax] bool, True = a real region)
    # features [N, agg.out_dim] float, valid [N] bool (False for images without regions)

Rows of images without regions are exact zeros (never NaN), and ``valid`` tells the objective to fall back to
the one-hot target row. Padding slots are ignored whatever values they hold (zeros, garbage, inf, NaN): the
inputs are sanitised before anything touches them, so not even gradients see them.

Every aggregator is built from the ``roi`` config section (:class:`softclip.schema.RoiConfig`, which holds the
defaults), the region size and the output size: ``AGGREGATORS.get(roi.aggregation)(roi, in_dim, out_dim)``.

Registered modes: ``mean``, ``max``, ``min`` (parameter-free masked pooling, ``out_dim == in_dim``),
``mean_proj`` (masked mean, then one learned linear projection to ``out_dim``: the auxiliary loss switched on
without a learned *aggregator*, which separates the two in the aggregation ablation) and ``mhsa`` (linear
projection, transformer encoder layer(s) with a key-padding mask, masked mean pooling, linear projection to
``out_dim``). ``train="frozen"`` freezes ``mhsa`` and ``mean_proj`` at a fixed seeded random initialisation, which
ablates learning; ``agg.learns`` says whether the aggregator has trainable parameters (then the objective adds
the auxiliary ROI<->tag InfoNCE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from softclip.registry import Registry

if TYPE_CHECKING:
    from softclip.schema import RoiConfig

AGGREGATORS: Registry[type[RoIAggregator]] = Registry("roi.aggregation")
FROZEN_SEED = 0  # the frozen ablation is one fixed random network, whatever the run's seed


class RoIAggregator(nn.Module):
    """Base class: input sanitising, the zero-region contract and the empty-batch case.

    Subclasses implement ``_aggregate(regions, mask, valid)`` on sanitised inputs (padding slots zeroed) and
    set ``out_dim``. ``valid`` rows hold at least one region; other rows may return anything finite.
    """

    out_dim: int
    learns: bool = False

    def forward(self, regions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregate regions per image.

        Args:
            regions: [N, Kmax, D] float region features (padding slots may hold anything).
            mask: [N, Kmax] bool, True where the slot is a real region.

        Returns:
            features [N, out_dim] float (zeros where not valid) and valid [N] bool.
        """
        if regions.dim() != 3 or mask.shape != regions.shape[:2]:
            raise ValueError(
                f"expected regions [N, K, D] and mask [N, K], got {tuple(regions.shape)} and {tuple(mask.shape)}"
            )
        mask = mask.to(torch.bool)
        valid = mask.any(dim=1)
        n = regions.shape[0]
        if regions.shape[1] == 0:  # a batch where no image has regions
            return regions.new_zeros(n, self.out_dim), valid
        regions = torch.where(mask.unsqueeze(-1), regions, regions.new_zeros(()))
        features = self._aggregate(regions, mask, valid)
        features = torch.where(valid.unsqueeze(-1), features, features.new_zeros(()))
        return features, valid

    def _aggregate(self, regions: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _MaskedPool(RoIAggregator):
    """Parameter-free pooling over the valid regions; ``out_dim == in_dim``.

    ``roi`` and ``out_dim`` are accepted and ignored: pooling has no projection, so the feature keeps the region
    dimension.
    """

    def __init__(self, roi: RoiConfig, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.in_dim = self.out_dim = int(in_dim)


@AGGREGATORS.register("mean")
class MaskedMeanPool(_MaskedPool):
    """Mean of the valid regions."""

    def _aggregate(self, regions: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(regions.dtype)
        return regions.sum(dim=1) / count  # padding is already zero


@AGGREGATORS.register("max")
class MaskedMaxPool(_MaskedPool):
    """Element-wise maximum over the valid regions."""

    def _aggregate(self, regions: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        fill = regions.new_full((), float("-inf"))
        return torch.where(mask.unsqueeze(-1), regions, fill).amax(dim=1)


@AGGREGATORS.register("min")
class MaskedMinPool(_MaskedPool):
    """Element-wise minimum over the valid regions."""

    def _aggregate(self, regions: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        fill = regions.new_full((), float("inf"))
        return torch.where(mask.unsqueeze(-1), regions, fill).amin(dim=1)


@AGGREGATORS.register("mean_proj")
class MeanProjection(RoIAggregator):
    """Masked mean of the valid regions followed by Linear(in_dim -> out_dim): a learned projection, not a learned
    aggregator (no interaction between regions), so the ROI<->tag InfoNCE trains it like ``mhsa``'s head.

    Args:
        roi: the ``roi`` section: ``width`` is the output size when ``out_dim`` is None; ``train`` is ``learn``
            (trainable) or ``frozen`` (a fixed seeded random projection, no gradients); the rest is ignored.
        in_dim: region feature size D. out_dim: output size (None: ``roi.width``).
    """

    def __init__(self, roi: RoiConfig, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim) if out_dim is not None else int(roi.width)
        frozen = roi.train == "frozen"
        with torch.random.fork_rng(devices=[], enabled=frozen):
            if frozen:
                torch.manual_seed(FROZEN_SEED)
            self.proj = nn.Linear(self.in_dim, self.out_dim)
        if frozen:
            self.requires_grad_(False)
        self.learns = not frozen

    def _aggregate(self, regions: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(regions.dtype)
        return self.proj((regions.sum(dim=1) / count).to(self.proj.weight.dtype))


@AGGREGATORS.register("mhsa")
class MHSAAggregator(RoIAggregator):
    """Multi-head self-attention over the regions of an image, then masked mean pooling.

    Linear(in_dim -> width), ``layers`` pre-norm ``nn.TransformerEncoderLayer`` (no positional encoding, so
    the result does not depend on region order) with a key-padding mask, LayerNorm, masked mean, Linear(width
    -> out_dim). Images without regions get one unmasked zero token so that attention never sees an all-masked
    row (which gives NaN); their output is zeroed afterwards.

    Args:
        roi: the ``roi`` section: ``width`` (transformer width, divisible by ``heads``), ``layers`` (encoder
            layers, >= 1), ``heads``, ``dropout`` (inside the encoder layers; 0 when frozen) and ``train``
            (``learn``, or ``frozen``: fixed seeded random weights, no gradients).
        in_dim: region feature size D.
        out_dim: output size (None: ``roi.width``; the model passes the joint embedding size).
    """

    def __init__(self, roi: RoiConfig, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        if roi.layers < 1:
            raise ValueError(f"roi.layers must be >= 1, got {roi.layers}")
        if roi.width % roi.heads:
            raise ValueError(f"roi.width={roi.width} must be divisible by roi.heads={roi.heads}")
        self.in_dim, self.width = int(in_dim), int(roi.width)
        self.out_dim = int(out_dim) if out_dim is not None else self.width
        frozen = roi.train == "frozen"
        with torch.random.fork_rng(devices=[], enabled=frozen):
            if frozen:
                torch.manual_seed(FROZEN_SEED)
            self._build(roi.layers, roi.heads, 0.0 if frozen else roi.dropout)
        if frozen:
            self.requires_grad_(False)
        self.learns = not frozen

    def _build(self, layers: int, heads: int, dropout: float) -> None:
        self.proj_in = nn.Linear(self.in_dim, self.width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=self.width,
                nhead=heads,
                dim_feedforward=4 * self.width,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(self.width)
        self.proj_out = nn.Linear(self.width, self.out_dim)

    def _aggregate(self, regions: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # Unmask slot 0 of empty images (it holds sanitised zeros): no all-masked attention row, no NaN.
        attend = mask.clone()
        attend[:, 0] |= ~valid
        x = self.proj_in(regions.to(self.proj_in.weight.dtype))
        padding = ~attend
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        x = self.norm(x)
        weights = attend.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1)
        return self.proj_out(pooled)


def list_aggregators() -> list[str]:
    """Names of the registered ROI aggregation modes (``roi.aggregation`` choices)."""
    return AGGREGATORS.names()


def build_aggregator(roi: RoiConfig, in_dim: int, out_dim: int | None = None) -> RoIAggregator:
    """Build the ROI aggregator of the ``roi`` config section (see module docstring for the forward contract).

    Args:
        roi: the ``roi`` section (:class:`softclip.schema.RoiConfig`): ``aggregation`` (a registered mode,
            ``list_aggregators()``), ``train`` and the ``mhsa`` architecture (ignored by pooling).
        in_dim: region feature size D.
        out_dim: output size for learned aggregators (None: ``roi.width``); pooling keeps ``in_dim``.

    Returns:
        The aggregator; ``.out_dim`` is its feature size and ``.learns`` whether it has trainable parameters.
    """
    if in_dim < 1:
        raise ValueError(f"roi in_dim must be >= 1, got {in_dim}")
    return AGGREGATORS.get(roi.aggregation)(roi, in_dim, out_dim)
