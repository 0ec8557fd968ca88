"""open_clip model factory: the two towers from scratch, plus the ROI aggregator, behind one module.

Tiny presets for CPU runs live in ``softclip/model_configs/*.json`` (open_clip's config format) and are
registered with open_clip when this module is imported, so ``open_clip.create_model("tiny-vit")`` works too:

- ``tiny-vit``: 64 px, patch 8, ViT width 128 x 3 layers x 4 heads; text width 128 x 2 layers x 4 heads,
  context 32, vocab 49408; embed 128 (the quick profile).
- ``tiny-vit-32``: the same at 32 px with patch 4 (the smoke profile).
- ``tiny-vit-32-p8``: 32 px with patch 8 (16 patches, ~4x cheaper vision tower; the quick profile).
- ``tiny-rn``: open_clip's ModifiedResNet with layers [1, 1, 1, 1], width 32, 64 px; same text tower.
- ``tiny-rn-32``: the same at 32 px (the power study's conv candidate, benchmarks/power.py).

Any other open_clip config name (``RN50``, ``ViT-B-32``, ...) builds the same way. Weights are never loaded:
everything is initialised randomly (``pretrained=None``; schema names such as ``hf-hub:`` are refused).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

from softclip.config import LossConfig, ModelConfig, RoiConfig
from softclip.objective.inputs import SideInputs
from softclip.objective.momentum import ema_update_
from softclip.objective.roi import RoIAggregator, build_aggregator
from softclip.registry import Registry

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
MODEL_PRESETS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))
MAX_LOGIT_SCALE = 100.0
SIGMOID_INIT = {"init_logit_scale": math.log(10.0), "init_logit_bias": -10.0}  # SigLIP's initial s and b

open_clip.add_model_config(MODEL_CONFIG_DIR)

Side = tuple[torch.Tensor | None, torch.Tensor | None]
IMAGE_SOURCES: Registry[Callable[[SoftCLIPModel, dict], Side]] = Registry("loss.image_source")
TEXT_SOURCES: Registry[Callable[[SoftCLIPModel, dict], Side]] = Registry("loss.text_source")


class SoftCLIPModel(nn.Module):
    """An open_clip CLIP model plus an optional ROI aggregator and an optional EMA teacher.

    Evaluation code duck-types on ``encode_image`` / ``encode_text``; training calls ``forward(batch)``, whose
    output dict is exactly the keyword arguments of ``SoftCLIPObjective.forward`` (the per-sample side inputs
    as one :class:`~softclip.objective.SideInputs`).

    Args:
        clip: an open_clip model (``CLIP`` or ``CustomTextCLIP``).
        roi: the ROI aggregator, or None when the run uses no region features.
        embed_dim: the joint embedding size.
        input_dtype: dtype images are cast to before the vision tower (low-precision weights), None to keep.
        momentum: EMA momentum m of a teacher copy of ``clip`` (the ``momentum`` target), None for no teacher.
            The teacher is a submodule (its weights are in the state dict and the checkpoint), never trained by
            gradient and always in eval mode; :meth:`update_teacher` moves it after each optimiser step.
    """

    def __init__(
        self,
        clip: nn.Module,
        roi: RoIAggregator | None,
        embed_dim: int,
        input_dtype: torch.dtype | None = None,
        momentum: float | None = None,
    ) -> None:
        super().__init__()
        self.clip = clip
        self.roi = roi
        self.embed_dim = int(embed_dim)
        self.input_dtype = input_dtype
        self.momentum = momentum
        self.teacher: nn.Module | None = None
        if momentum is not None:
            if not 0.0 <= momentum < 1.0:
                raise ValueError(f"loss.momentum={momentum} must lie in [0, 1)")
            self.teacher = copy.deepcopy(clip).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SoftCLIPModel:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # deterministic targets: no dropout, BatchNorm on its (copied) statistics
        return self

    def update_teacher(self) -> None:
        """θ_m ← m·θ_m + (1 − m)·θ (a no-op without a teacher); call after every optimiser step."""
        if self.teacher is not None:
            ema_update_(self.teacher, self.clip, self.momentum)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """images [B, 3, H, W] float -> [B, E] (L2-normalised when ``normalize``)."""
        if self.input_dtype is not None:
            images = images.to(self.input_dtype)
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """tokens [B, L] long -> [B, E] (L2-normalised when ``normalize``).

        Trailing columns that are padding in every row are cut first (see :func:`trim_padding`): under the
        causal text mask they cannot change the pooled EOT feature, and short captions or tag prompts then
        cost what their tokens cost instead of the full context length.
        """
        return _encode_text(self.clip, tokens, normalize)

    @torch.no_grad()
    def encode_teacher(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The EMA teacher's L2-normalised embeddings ([B, E], [B, E]) of a batch, without gradient."""
        if self.teacher is None:
            raise ValueError("this model has no EMA teacher (build it with momentum=m for loss.target=momentum)")
        if self.input_dtype is not None:
            images = images.to(self.input_dtype)
        return self.teacher.encode_image(images, normalize=True), _encode_text(self.teacher, tokens, True)

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """The sigmoid loss's learnable bias b (scalar tensor), None for a model without one (InfoNCE)."""
        return getattr(self.clip, "logit_bias", None)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The logit multiplier s = exp(logit_scale), clamped at 100 (scalar tensor, differentiable below)."""
        return self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both towers (open_clip's activation checkpointing)."""
        self.clip.set_grad_checkpointing(enable)

    def forward(
        self, batch: dict[str, Any], image_source: str = "roi", text_source: str = "tag"
    ) -> dict[str, torch.Tensor | None]:
        """Embed a training batch and its intra-modal side features.

        Args:
            batch: ``image`` [B,3,H,W] float, ``text`` [B,L] long, and as the sources need them ``roi``
                [B,Kmax,D] float, ``roi_mask`` [B,Kmax] bool, ``tags`` [B,L] long, ``tags_mask`` [B] bool.
            image_source: ``roi`` (aggregated regions) or ``image`` (None: the objective uses the image features).
            text_source: ``tag`` (tag tokens through the text tower, no gradient) or ``text`` (None).

        Returns:
            ``image_features`` [B,E], ``text_features`` [B,E] (L2-normalised), ``logit_scale`` (scalar),
            ``logit_bias`` (scalar, None without one: the sigmoid loss's) and ``side``, a
            :class:`~softclip.objective.SideInputs`: ``image_side`` [B,A] and ``image_side_mask`` [B] bool (None
            for source ``image``), ``text_side`` [B,E] and ``text_side_mask`` [B] bool (None for source ``text``),
            the batch's ``scene_image``/``scene_text`` codes as ``image_scene``/``text_scene`` (None when absent),
            the teacher's ``image_teacher``/``text_teacher`` [B,E] (None without a teacher). These are exactly the
            keyword arguments of ``SoftCLIPObjective.forward``.
        """
        image_side, image_side_mask = IMAGE_SOURCES.get(image_source)(self, batch)
        text_side, text_side_mask = TEXT_SOURCES.get(text_source)(self, batch)
        image_teacher, text_teacher = (
            (None, None) if self.teacher is None else self.encode_teacher(batch["image"], batch["text"])
        )
        image_features = self.encode_image(batch["image"], normalize=True)
        text_features = self.encode_text(batch["text"], normalize=True)
        side = SideInputs(
            image_side, text_side, image_side_mask, text_side_mask,
            batch.get("scene_image"), batch.get("scene_text"), image_teacher, text_teacher,
        )  # fmt: skip
        return {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
            "side": side,
        }


PAD_ID = 0  # open_clip's SimpleTokenizer pads with 0


def trim_padding(tokens: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """tokens [B, L] -> [B, L'] without the trailing columns that are ``pad_id`` in every row (L' >= 1)."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return tokens[:, :length]


def _encode_text(clip: nn.Module, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
    tower = causal_text_tower(clip)
    if tower is None:
        return clip.encode_text(tokens, normalize=normalize)
    return encode_text_trimmed(tower, trim_padding(tokens, tower.pad_id), normalize)


@dataclass(frozen=True)
class CausalTextTower:
    """The public parts of an open_clip text tower whose pooled output ignores trailing padding: a causal
    ``attn_mask`` and EOT pooling (``argmax``: the highest token id; ``eos``: the first ``eos_id``)."""

    module: nn.Module  # holds token_embedding, positional_embedding, attn_mask, transformer, ln_final, text_projection
    pool_type: str
    eos_id: int | None
    pad_id: int


def causal_text_tower(clip: nn.Module) -> CausalTextTower | None:
    """The tower of an open_clip ``CLIP`` (its own attributes) or ``CustomTextCLIP`` (``clip.text``, a
    ``TextTransformer``) when trimming trailing pad columns cannot change its output; None otherwise (no causal
    mask, ``first``/``last`` pooling, a class token or pad mask, token outputs, any other text tower): the
    caller then runs the full-context ``encode_text``."""
    if isinstance(clip, open_clip.CLIP):
        module, pool, eos, pad = clip, clip.text_pool_type, getattr(clip, "text_eos_id", None), PAD_ID
    elif isinstance(clip, open_clip.CustomTextCLIP) and isinstance(clip.text, TextTransformer):
        text = clip.text
        if text.cls_emb is not None or text.use_pad_mask or text.output_tokens:
            return None
        module, pool, eos, pad = text, text.pool_type, text.eos_id, text.pad_id
    else:
        return None
    if getattr(module, "attn_mask", None) is None or pool not in ("argmax", "eos"):
        return None
    return CausalTextTower(module, pool, eos, pad)


def encode_text_trimmed(tower: CausalTextTower, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
    """open_clip's causal text forward on [B, L'] tokens, L' <= context length: the positional embedding and the
    causal mask sliced to L' (re-composed from the tower's public modules, as open_clip's own ``encode_text``
    composes them). Equal to the full-context pass when the cut columns are padding in every row: under the
    causal mask no earlier position attends to them, and pooling reads the EOT position. -> [B, E]."""
    m, length = tower.module, tokens.shape[1]
    cast_dtype = m.transformer.get_cast_dtype()
    x = m.token_embedding(tokens).to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
    x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
    x = m.ln_final(x)
    x = text_global_pool(x, tokens, tower.pool_type, eos_token_id=tower.eos_id)
    if m.text_projection is not None:
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
    return nn.functional.normalize(x, dim=-1) if normalize else x


@IMAGE_SOURCES.register("roi")
def _roi_side(model: SoftCLIPModel, batch: dict[str, Any]) -> Side:
    """Aggregated region features A [B, A] with validity [B]; keeps the graph so the aggregator can learn.
    ``batch["roi"]`` may arrive as float16 (the sidecars' dtype); it is widened here, on the model's device."""
    if model.roi is None:
        raise ValueError("loss.image_source='roi' needs an ROI aggregator: build_model(..., roi_in_dim=D)")
    return model.roi(batch["roi"].float(), batch["roi_mask"])


@IMAGE_SOURCES.register("image")
def _image_side(model: SoftCLIPModel, batch: dict[str, Any]) -> Side:
    return None, None


@TEXT_SOURCES.register("tag")
def _tag_side(model: SoftCLIPModel, batch: dict[str, Any]) -> Side:
    """Tag embeddings B [B, E] (no gradient: targets are detached anyway) with validity [B]."""
    with torch.no_grad():
        side = model.encode_text(batch["tags"], normalize=True)
    return side, batch["tags_mask"].to(torch.bool)


@TEXT_SOURCES.register("text")
def _text_side(model: SoftCLIPModel, batch: dict[str, Any]) -> Side:
    return None, None


class _DropNoPretrainedWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _from_scratch_is_intended() -> Iterator[None]:
    """Silence open_clip's "No pretrained weights loaded ... initialized randomly": training from scratch is the
    point here (the suite never loads weights), so the warning only buries real ones."""
    root, quiet = logging.getLogger(), _DropNoPretrainedWarning()
    handlers = [root, *root.handlers]
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def build_model(
    model: ModelConfig,
    roi: RoiConfig | None = None,
    loss: LossConfig | None = None,
    *,
    roi_in_dim: int | None = None,
    precision: str = "fp32",
    teacher: bool = True,
) -> tuple[SoftCLIPModel, Callable, Callable, Callable]:
    """Build a randomly initialised SoftCLIP model from its config sections.

    Args:
        model: the ``model`` section; ``model.name`` is an open_clip config name (a preset in ``MODEL_PRESETS`` or
            a built-in such as ``ViT-B-32``).
        roi: the ``roi`` section (None: its defaults) for :func:`softclip.objective.build_aggregator`; a learned
            aggregator outputs the joint embedding size.
        loss: the ``loss`` section (None: its defaults), read for what the loss asks of the model
            (:class:`softclip.schema.LossConfig`): an ROI aggregator when ``reads_regions``; SigLIP's learnable
            bias b = −10 and s = 10 at initialisation when ``learns_bias`` (open_clip's ``init_logit_bias`` /
            ``init_logit_scale``); an EMA teacher when ``teacher_momentum`` is set.
        roi_in_dim: region feature size D; None builds no aggregator (image source ``image`` only).
        precision: open_clip precision (``fp32``, ``bf16``, ``amp_bf16``, ...).
        teacher: False leaves the EMA teacher out even where the loss has one (evaluation uses the towers only).

    Returns:
        (model, preprocess_train, preprocess_val, tokenizer); the tokenizer maps list[str] -> [B, L] long.
    """
    loss = loss if loss is not None else LossConfig()
    name = model.name
    if ":" in name:
        raise ValueError(f"model {name!r}: schema names (hf-hub:, local-dir:) may load weights; use a config name")
    config = open_clip.get_model_config(name.replace("/", "-"))  # open_clip accepts ViT-B/32
    if config is None:
        raise ValueError(f"model {name!r} is not an open_clip config; presets: {', '.join(MODEL_PRESETS)}")
    init = SIGMOID_INIT if loss.learns_bias else {}
    with _from_scratch_is_intended():
        clip, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            name, pretrained=None, precision=precision, pretrained_image=False, pretrained_text=False, **init
        )
    tokenizer = open_clip.get_tokenizer(name)
    embed_dim = int(config["embed_dim"])
    aggregator = None
    if roi_in_dim is not None and loss.reads_regions:
        aggregator = build_aggregator(roi if roi is not None else RoiConfig(), roi_in_dim, out_dim=embed_dim)
    input_dtype = open_clip.get_input_dtype(precision)  # None unless the weights themselves are low precision
    if aggregator is not None and input_dtype is not None:
        aggregator = aggregator.to(input_dtype)
    momentum = loss.teacher_momentum if teacher else None
    built = SoftCLIPModel(clip, aggregator, embed_dim, input_dtype=input_dtype, momentum=momentum)
    return built, preprocess_train, preprocess_val, tokenizer


def _token_embedding(clip: nn.Module) -> nn.Module | None:
    """The text tower's token embedding (CLIP, CustomTextCLIP with TextTransformer or an HF text model)."""
    for owner in (clip, getattr(clip, "text", None)):
        if owner is not None and isinstance(getattr(owner, "token_embedding", None), nn.Module):
            return owner.token_embedding
    text = getattr(clip, "text", None)
    transformer = getattr(text, "transformer", None)
    if transformer is not None and hasattr(transformer, "get_input_embeddings"):
        return transformer.get_input_embeddings()
    return None


def count_parameters(model: SoftCLIPModel) -> dict[str, int]:
    """Parameter counts per part.

    Returns:
        ``image`` (vision tower), ``text`` (text tower without its token embedding), ``token_embedding``
        (it dominates tiny models), ``logit`` (scale and bias), ``roi`` (aggregator), ``teacher`` (the EMA
        copy, not trained), ``total`` and ``trainable`` (requires_grad).
    """
    clip = model.clip
    token = _token_embedding(clip)
    token_ids = {id(p) for p in token.parameters()} if token is not None else set()
    image_ids = {id(p) for p in clip.visual.parameters()}
    counts = dict.fromkeys(("image", "text", "token_embedding", "logit", "roi", "teacher"), 0)
    for name, p in clip.named_parameters():
        if id(p) in image_ids:
            part = "image"
        elif id(p) in token_ids:
            part = "token_embedding"
        elif name.startswith("logit_"):
            part = "logit"
        else:
            part = "text"
        counts[part] += p.numel()
    if model.roi is not None:
        counts["roi"] = sum(p.numel() for p in model.roi.parameters())
    if model.teacher is not None:
        counts["teacher"] = sum(p.numel() for p in model.teacher.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
