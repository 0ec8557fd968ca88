"""SoftCLIPObjective: InfoNCE + soft-target divergence + disentangled negatives (+ ROI<->tag InfoNCE).

L = w_nce·L_nce + λ·L_soft + µ·L_re + γ·L_roi (DESIGN.md, 'The SoftCLIP objective'). Terms whose weight is 0
are not computed (they are returned as zero tensors); λ = µ = 0 reproduces open_clip's ``ClipLoss`` bit for bit
(both directions' logits are then computed as ClipLoss computes them, s·U Vᵀ and s·V Uᵀ; with the soft terms on,
one process forms one product and takes t2i as its transpose, which saves a third of the matrix products). Logits and
log-probabilities are float32 (float64 stays float64) whatever autocast says; targets are log-probabilities
(:mod:`softclip.objective.targets`). The per-direction terms (and their helpers: the rows L_re keeps, scratch
blocks for the targets) come from the ``loss.impl`` path (:data:`IMPLS`):
``reference`` (:mod:`softclip.objective.reference`, plain autograd, the definition) or ``fused``
(:mod:`softclip.objective.losses`, hand-written backward). Only ``loss`` carries gradient; the ``*_loss`` terms
come back detached, for logging.

``loss.contrastive`` (:data:`CONTRASTIVES`) says how a block of logits is scored: ``infonce`` (the softmax over the
batch, above) or ``sigmoid`` (:mod:`softclip.objective.sigmoid`: every pair its own binary question, logits
s·UVᵀ + b with the model's learnable bias b passed as ``logit_bias``; SigLIP, open_clip's ``SigLipLoss`` with
hard targets). The soft targets are the same rows Y either way.

Distributed (torch.distributed initialised, world W > 1): features are all-gathered with gradient
(:mod:`softclip.objective.distributed`), side features and masks without; each rank computes its local rows
against the global columns and returns per-rank terms whose average over ranks equals the single-process term
on the concatenated batch; with DDP's gradient averaging every parameter gradient equals the single-process one.
Diagnostics (keys not ending in ``_loss``) are over local rows only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from softclip.objective.distributed import (
    all_reduce_sum,
    check_equal_local_sizes,
    gather_no_grad,
    gather_with_grad,
    rank_and_world,
)
from softclip.objective.inputs import SideInputs
from softclip.objective.momentum import teacher_logits
from softclip.objective.oracle import relevance
from softclip.objective.precision import target_precision, true_share
from softclip.objective.reference import DirectionSpec, roi_info_nce_sums
from softclip.objective.scoring import CONTRASTIVES, IMPLS, ROI_SCALES
from softclip.objective.targets import (
    SideView,
    build_targets,
    identity_log_target,
)
from softclip.schema import LossConfig


@dataclass
class _Side:
    """One side's normalised features (gradient kept only for the ROI term) and masks."""

    rows: torch.Tensor  # [N_l, a]
    cols: torch.Tensor  # [N_g, a]
    row_valid: torch.Tensor | None  # [N_l] bool
    col_valid: torch.Tensor | None  # [N_g] bool

    def view(
        self, relevant: torch.Tensor | None = None, teacher: torch.Tensor | None = None, precision: float | str = 1.0
    ) -> SideView:
        return SideView(
            self.rows.detach(), self.cols.detach(), self.row_valid, self.col_valid, relevant, teacher_logits=teacher,
            oracle_precision=precision,
        )

    def valid(self, local: bool) -> torch.Tensor:
        mask = self.row_valid if local else self.col_valid
        n = (self.rows if local else self.cols).shape[0]
        return torch.ones(n, dtype=torch.bool, device=self.rows.device) if mask is None else mask


def _check_mask(mask: torch.Tensor | None, n: int, name: str) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}], got {tuple(mask.shape)}")
    return mask.to(torch.bool)


class SoftCLIPObjective(nn.Module):
    """The SoftCLIP objective, built from the ``loss`` config section.

    ``SoftCLIPObjective(cfg.loss)`` takes a :class:`softclip.schema.LossConfig`, which holds every default and
    validates every key; keyword use, ``SoftCLIPObjective(target="selfsim", beta=0.3, tau=0.07, ...)`` (the
    target may come first, positionally), builds that section from the keywords, so both ways mean the same.
    The keys: ``target``, ``beta`` (β), ``tau`` (τ), ``divergence``, ``pairing``, ``nce_weight`` (w_nce),
    ``soft_weight`` (λ), ``re_weight`` (µ), ``roi_weight`` (γ), ``impl`` (:data:`IMPLS`: which implementation
    computes the terms), ``reverse_floor``, ``one_hot_rows``, ``roi_logit_scale`` (:data:`ROI_SCALES`),
    ``contrastive`` (:data:`CONTRASTIVES`; ``sigmoid`` needs ``re_weight=0`` and a ``logit_bias`` in
    ``forward``), ``re_divergence``, ``oracle_precision``; the section's other keys (``image_source``,
    ``momentum``, ...) concern the data and the model and are not read here. ``.config`` is the section.
    """

    def __init__(self, config: LossConfig | str | None = None, /, **keys: Any) -> None:
        super().__init__()
        if isinstance(config, str):  # SoftCLIPObjective("hard", ...): the target first
            config, keys = None, {"target": config, **keys}
        if config is None:
            config = LossConfig(**keys)
        elif keys:
            raise TypeError("pass the loss section or its keys, not both (section.model_copy(update=...))")
        elif not isinstance(config, LossConfig):
            raise TypeError(f"expected a LossConfig (the loss section), got {type(config).__name__}")
        self.config = config
        self.path = IMPLS.get(config.impl)()  # the loss.impl path: its terms, kept rows and target blocks
        self.terms_fn = CONTRASTIVES.get(config.contrastive)(self.path)
        self.roi_scale_fn = ROI_SCALES.get(config.roi_logit_scale)
        if not math.isfinite(config.tau):  # the section checks the ranges; infinities pass its bounds
            raise ValueError(f"loss.tau={config.tau} must be a positive finite number")
        for key in ("nce_weight", "soft_weight", "re_weight", "roi_weight"):
            if not math.isfinite(getattr(config, key)):
                raise ValueError(f"loss.{key}={getattr(config, key)} must be a finite number >= 0")

    @classmethod
    def from_config(cls, loss_cfg: LossConfig) -> SoftCLIPObjective:
        """``SoftCLIPObjective(loss_cfg)``, kept as an alias."""
        return cls(loss_cfg)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        image_side: torch.Tensor | None = None,
        text_side: torch.Tensor | None = None,
        image_side_mask: torch.Tensor | None = None,
        text_side_mask: torch.Tensor | None = None,
        *,
        side: SideInputs | None = None,
        logit_bias: torch.Tensor | None = None,
        roi_logit_scale: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the objective.

        Args:
            image_features: [N, d] L2-normalised image embeddings U.
            text_features: [N, d] L2-normalised text embeddings V.
            logit_scale: scalar multiplier s (already exponentiated).
            image_side, text_side, image_side_mask, text_side_mask: the side features and their masks as
                keywords (:class:`SideInputs` says what each is); they build ``side``.
            side: every per-sample input beside U and V as one value (:class:`SideInputs`: side features, masks,
                scene codes, teacher embeddings), instead of the four keywords above.
            logit_bias: scalar b of the sigmoid loss (the model's learnable bias); required by
                ``contrastive="sigmoid"``, refused by ``infonce``.
            roi_logit_scale: scalar multiplier of the ROI<->tag InfoNCE (default: from ``logit_scale`` as the
                ``roi_logit_scale`` key says), e.g. a parameter the model owns.

        Returns:
            ``loss`` (weighted total, differentiable); ``nce_loss``, ``soft_loss``, ``re_loss``, ``roi_loss``
            (unweighted, detached; zero tensors where not computed); diagnostics ``pred_pos_mass`` (mean
            predicted probability of the positive), ``logit_scale`` and, when targets are built,
            ``target_entropy`` (mean row entropy of Y), ``target_pos_mass`` (mean diagonal of Y) and, with the
            relation-enhanced term, ``re_kept_fraction`` (share of rows with off-diagonal target mass); with
            scene codes and a soft target, ``target_precision_i2t`` / ``target_precision_t2i`` (share of the
            off-diagonal target mass on true matches, mean over rows with such mass; NaN where none has any) and
            ``target_true_share`` (share of true matches among the off-diagonal pairs, the uninformative level).
        """
        loose = (image_side, text_side, image_side_mask, text_side_mask)
        if side is None:
            side = SideInputs(*loose)
        elif any(x is not None for x in loose):
            raise ValueError("pass the side inputs either as side=SideInputs(...) or as keywords, not both")
        dtype = torch.promote_types(image_features.dtype, torch.float32)
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            u, v = image_features.to(dtype), text_features.to(dtype)
            if u.dim() != 2 or u.shape != v.shape:
                raise ValueError(
                    f"expected image/text features [N, d] of one shape, got {u.shape} and {v.shape}"
                )
            s = torch.as_tensor(logit_scale, device=u.device).to(dtype)
            roi_s = (
                self.roi_scale_fn(s)
                if roi_logit_scale is None
                else torch.as_tensor(roi_logit_scale, device=u.device).to(dtype)
            )
            masks = (_check_mask(side.image_side_mask, u.shape[0], "image_side_mask"),
                     _check_mask(side.text_side_mask, u.shape[0], "text_side_mask"))  # fmt: skip
            scenes = (side.image_scene, side.text_scene)
            momentum = self.config.target == "momentum"
            teacher = (side.image_teacher, side.text_teacher) if momentum else (None, None)
            bias = self._bias(logit_bias, u)
            return self._forward(u, v, s, (side.image_side, side.text_side), masks, roi_s, scenes, teacher, bias)

    def _bias(self, logit_bias: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """The sigmoid loss's bias b as a 0-dim tensor of ``like``'s dtype; None for InfoNCE."""
        if self.config.contrastive != "sigmoid":
            if logit_bias is not None:
                raise ValueError("logit_bias is only used by loss.contrastive=sigmoid (InfoNCE has no bias)")
            return None
        if logit_bias is None:
            raise ValueError("loss.contrastive=sigmoid needs logit_bias (the model's learnable clip.logit_bias)")
        return torch.as_tensor(logit_bias, device=like.device).to(like.dtype).reshape(())

    def _roi_active(self, image_side: torch.Tensor | None, text_side: torch.Tensor | None) -> bool:
        return (
            self.config.roi_weight > 0
            and image_side is not None
            and image_side.requires_grad
            and text_side is not None
        )

    def _forward(
        self, u, v, s, sides, masks, roi_s, scenes=(None, None), teacher=(None, None), bias=None
    ) -> dict[str, torch.Tensor]:
        rank, world = rank_and_world()
        check_equal_local_sizes(u.shape[0], u.device)
        offset, n_global = rank * u.shape[0], world * u.shape[0]
        u_g, v_g = gather_with_grad(u), gather_with_grad(v)
        if world == 1 and not self._infonce_only(n_global):
            # one product serves both directions (t2i is its transpose, contiguous for the row passes)
            z = s * u @ v.T
            logits = (z, z.T.contiguous())
        else:
            # distributed: each direction is its own block; InfoNCE only: t2i as its own product s·V Uᵀ, as
            # ClipLoss computes it (the transpose of s·U Vᵀ differs by float rounding), so the CLIP special case
            # is ClipLoss bit for bit
            logits = (s * u @ v_g.T, s * v @ u_g.T)
        if bias is not None:
            logits = (logits[0] + bias, logits[1] + bias)
        roi_on = self._roi_active(*sides)
        a = self._side(sides[0], u, u_g, masks[0], keep_grad=roi_on)
        b = self._side(sides[1], v, v_g, masks[1], keep_grad=False)
        relevant = self._relevance(*scenes, u.shape[0]) if self._targets_on(n_global) else (None, None)
        oracle = self.config.target == "oracle"
        cross = relevant if oracle else (None, None), teacher_logits(*teacher, s, u.shape[0])
        ys, smoothed, out = self._targets(a, b, offset, logits[0], *cross)
        out.update(self._precision(ys, smoothed, relevant, offset))  # before the terms: the fused path clamps ys
        keeps, re_weights, re_scales = self._re_plan(ys, smoothed, offset, world, n_global, logits[0])
        terms = []
        c = self.config
        for z, y, keep, w_re in zip(logits, ys, keeps, re_weights, strict=True):
            spec = DirectionSpec(
                offset, c.divergence, c.reverse_floor, c.one_hot_rows, nce_weight=0.5 * c.nce_weight,
                soft_weight=0.5 * c.soft_weight, re_weight=w_re, re_divergence=c.re_divergence,
            )  # fmt: skip
            terms.append(self.terms_fn(z, y, keep, spec))
        total, nce, soft, re_sums, pos_mass, neg_entropy = (tuple(t[k] for t in terms) for k in range(6))
        zero = u.new_zeros(())
        out.update(nce_loss=zero, soft_loss=zero, re_loss=zero, roi_loss=zero)
        if self.config.nce_weight > 0:
            out["nce_loss"] = 0.5 * (nce[0] + nce[1])
        if self.config.soft_weight > 0:
            out["soft_loss"] = 0.5 * (soft[0] + soft[1])
        if re_scales is not None:
            out["re_loss"] = 0.5 * (re_sums[0] * re_scales[0] + re_sums[1] * re_scales[1])
            out["re_kept_fraction"] = re_scales[2]
        if ys[0] is not None:
            out["target_entropy"] = -0.5 * (neg_entropy[0] + neg_entropy[1])
        loss = total[0] + total[1]
        if roi_on:
            roi = self._roi_loss(a, b, roi_s, offset, world)
            loss = loss + self.config.roi_weight * roi
            out["roi_loss"] = roi.detach()
        out.update(loss=loss, pred_pos_mass=0.5 * (pos_mass[0] + pos_mass[1]), logit_scale=s.detach())
        return out

    def _infonce_only(self, n_global: int) -> bool:
        """True when no soft or relation-enhanced term runs (the CLIP special case: λ = 0 and µ = 0)."""
        return self.config.soft_weight == 0 and not self._re_on(n_global)

    def _re_on(self, n_global: int) -> bool:
        return self.config.re_weight > 0 and n_global >= 2

    def _targets_on(self, n_global: int) -> bool:
        """Whether targets are built at all (the soft or the relation-enhanced term runs)."""
        return self.config.soft_weight > 0 or self._re_on(n_global)

    @staticmethod
    def _precision(ys: tuple, smoothed: tuple, relevant: tuple, offset: int) -> dict[str, torch.Tensor]:
        """Target-precision diagnostics of the smoothed directions (none without scene codes or soft targets)."""
        if relevant[0] is None or not any(smoothed):
            return {}
        nan = ys[0].new_full((), float("nan"))
        out = {f"target_precision_{d}": target_precision(y, rel, offset) if on else nan
               for d, y, rel, on in zip(("i2t", "t2i"), ys, relevant, smoothed, strict=True)}  # fmt: skip
        out["target_true_share"] = 0.5 * (true_share(relevant[0], offset, ys[0].dtype)
                                          + true_share(relevant[1], offset, ys[0].dtype))  # fmt: skip
        return out

    @staticmethod
    def _relevance(image_scene: torch.Tensor | None, text_scene: torch.Tensor | None, n: int) -> tuple:
        """(i2t, t2i) truth [N_l, N_g] from scene codes: captions describing each local image, images each local
        caption describes; (None, None) without codes."""
        if image_scene is None or text_scene is None:
            return None, None
        for code, name in ((image_scene, "image_scene"), (text_scene, "text_scene")):
            if code.dim() != 2 or code.shape[0] != n:
                raise ValueError(f"{name} must be [{n}, k] scene codes, got {tuple(code.shape)}")
        i2t = relevance(image_scene, gather_no_grad(text_scene))
        t2i = relevance(gather_no_grad(image_scene), text_scene).T
        return i2t, t2i

    def _targets(self, a: _Side, b: _Side, offset: int, like: torch.Tensor,
                 relevant: tuple = (None, None), teacher: tuple = (None, None)) -> tuple[tuple, tuple, dict]:  # fmt: skip
        """Log target rows of both directions (None where only InfoNCE runs), whether each is smoothed (not the
        identity), and ``target_pos_mass``."""
        if not self._targets_on(like.shape[1]):
            return (None, None), (False, False), {}
        blocks = self.path.target_blocks(like)
        c = self.config
        views = a.view(relevant[0], teacher[0], c.oracle_precision), b.view(relevant[1], teacher[1], c.oracle_precision)
        ys = build_targets(*views, c.target, c.pairing, c.beta, c.tau, offset, blocks)
        smoothed = (ys[0] is not None, ys[1] is not None)
        if not any(smoothed) and self.config.soft_weight == 0:
            return (None, None), smoothed, {}  # identity targets: no relation-enhanced rows, soft term off
        ys = tuple(identity_log_target(like, offset) if y is None else y for y in ys)
        with torch.no_grad():
            pos = 0.5 * (ys[0].diagonal(offset).exp().mean() + ys[1].diagonal(offset).exp().mean())
        return ys, smoothed, {"target_pos_mass": pos}

    def _re_plan(self, ys, smoothed, offset: int, world: int, n_global: int, like: torch.Tensor) -> tuple:
        """Kept rows per direction and the weights that turn each rank's row sums into the global mean.

        Identity targets (the hard target, β = 0) have no off-diagonal mass: their directions are skipped.

        Returns:
            (keep per direction, weight of each direction's row sum in the total, (scale_i2t, scale_t2i, kept
            fraction)); (None, None), (None, None), None when the term is off.
        """
        if not (any(smoothed) and self._re_on(n_global)):
            return (None, None), (None, None), None
        with torch.no_grad():
            keeps = tuple(
                self.path.kept_rows(y, offset) if on else None for y, on in zip(ys, smoothed, strict=True)
            )
            counts = torch.stack([like.new_zeros(()) if k is None else k.sum().to(like.dtype) for k in keeps])
            counts = all_reduce_sum(counts)
            scales = world / counts.clamp_min(1.0)  # the rank average of these scaled sums is the global mean
        re_weight = self.config.re_weight
        weights = tuple(None if k is None else 0.5 * re_weight * scales[i] for i, k in enumerate(keeps))
        return keeps, weights, (scales[0], scales[1], counts.sum() / (2.0 * n_global))

    @staticmethod
    def _side(
        side: torch.Tensor | None,
        own: torch.Tensor,
        own_g: torch.Tensor,
        mask: torch.Tensor | None,
        keep_grad: bool,
    ) -> _Side:
        """Normalised side features (local, global) and masks; the own embeddings when ``side`` is None."""
        if side is None:
            rows, cols = own.detach(), own_g.detach()
        else:
            if side.dim() != 2 or side.shape[0] != own.shape[0]:
                raise ValueError(f"side features must be [{own.shape[0]}, a], got {tuple(side.shape)}")
            rows = F.normalize(side.to(own.dtype), dim=1)
            cols = gather_with_grad(rows) if keep_grad else gather_no_grad(rows.detach())
            rows = rows if keep_grad else rows.detach()
        return _Side(rows, cols, mask, None if mask is None else gather_no_grad(mask))

    def _roi_loss(self, a: _Side, b: _Side, scale: torch.Tensor, offset: int, world: int) -> torch.Tensor:
        """ROI<->tag InfoNCE over samples with both sides; text side detached; mean over the global valid rows."""
        if a.rows.shape[1] != b.rows.shape[1]:
            raise ValueError(
                f"the ROI<->tag InfoNCE needs image_side and text_side of one dimension, got "
                f"{a.rows.shape[1]} and {b.rows.shape[1]} (project one onto the other in the model)"
            )
        valid = (a.valid(True) & b.valid(True), a.valid(False) & b.valid(False))
        total, count = roi_info_nce_sums(
            (a.rows, a.cols), (b.rows.detach(), b.cols.detach()), valid, offset, scale
        )
        return total * (world / all_reduce_sum(count).clamp_min(1.0))
