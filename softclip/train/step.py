"""One optimiser step's computation: micro-batches in, gradients accumulated, loss terms out.

Gradient accumulation keeps the per-step semantics exact: the contrastive objective of an
``accum_steps``-way split batch is the objective of the *whole* batch (every row sees every column), not a
sum of small-batch losses. As in open_clip's ``accum_freq`` (and GradCache), the model first embeds all
micro-batches without a graph; then each micro-batch is embedded again with a graph, the full-batch
objective is evaluated with that slice live and the cached rest detached, and its gradient accumulated.
Summed over micro-batches this is the full-batch gradient, as every embedding's gradient is taken once.
Two details make it exact where open_clip is not: the logit scale (used directly by the objective) stays
attached in one pass only, instead of collecting ``accum_steps`` copies of its gradient; and each
re-embedding replays the RNG state and the module buffers (BatchNorm statistics) of its first pass, so
dropout masks and normalisation match the cached features.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from softclip.objective.inputs import SideInputs
from softclip.train.dist import DistEnv, all_reduce

MODEL_KEYS = ("image", "text", "roi", "roi_mask", "tags", "tags_mask", "scene_image", "scene_text")
GRAD_KEYS = ("image_features", "text_features", "image_side")  # image_side: a field of the SideInputs
SCALAR_KEYS = ("logit_scale", "logit_bias")  # model parameters the objective uses directly, not per sample
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """The model's inputs of a loader batch, on ``device`` (the ``key`` list stays behind)."""
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_KEYS if k in batch}


def equalise(micro: list[dict[str, torch.Tensor]], env: DistEnv) -> list[dict[str, torch.Tensor]]:
    """Trim each micro-batch to the smallest size over ranks (a batch that lost bad samples is short).

    The distributed objective needs equal local sizes; trimming is deterministic, so resume stays exact.
    """
    if not env.distributed:
        return micro
    sizes = torch.tensor([len(m["image"]) for m in micro], dtype=torch.int64, device=env.device)
    least = all_reduce(sizes, env, op="min").tolist()
    return [
        {k: v[:n] for k, v in m.items()} if n < len(m["image"]) else m
        for m, n in zip(micro, least, strict=True)
    ]


def step_seed(seed: int, rank: int, step: int) -> int:
    """The RNG seed of (run seed, rank, step): randomness at a step never depends on how the run got there."""
    return ((seed * 1_000_003 + rank) * 998_244_353 + step) % (2**63 - 1)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision="bf16"``; a no-op for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@dataclass
class StepModel:
    """What a step runs.

    Attributes:
        model: the callable forward (the SoftCLIPModel, possibly DDP-wrapped and/or compiled).
        raw: the bare SoftCLIPModel (its buffers are replayed between the two passes).
        objective: the SoftCLIPObjective.
        image_source, text_source: ``loss.image_source`` / ``loss.text_source``.
        device, precision: where and how (``fp32`` or ``bf16`` autocast).
        no_sync: DDP's ``no_sync`` context factory (None when not distributed).
    """

    model: Callable[..., dict[str, Any]]
    raw: nn.Module
    objective: nn.Module
    image_source: str
    text_source: str
    device: torch.device
    precision: str = "fp32"
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None

    def embed(self, batch: dict[str, torch.Tensor], module: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        return module(batch, image_source=self.image_source, text_source=self.text_source)


def forward_backward(sm: StepModel, micro: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Accumulate the gradient of the objective over the concatenation of ``micro``; returns its terms."""
    if len(micro) == 1:
        with autocast(sm.device, sm.precision):
            terms = sm.objective(**sm.embed(micro[0], sm.model))
        terms["loss"].backward()
        return terms
    buffers = [b.detach().clone() for b in sm.raw.buffers()]
    rng, cache = [], []
    with torch.no_grad(), autocast(sm.device, sm.precision):
        for batch in micro:
            rng.append(_rng_state(sm.device))
            cache.append(sm.embed(batch, sm.model))
    with torch.no_grad():
        for b, saved in zip(sm.raw.buffers(), buffers, strict=True):
            b.copy_(saved)
    terms: dict[str, torch.Tensor] = {}
    for j, batch in enumerate(micro):
        last = j == len(micro) - 1
        _set_rng_state(rng[j], sm.device)
        sync = contextlib.nullcontext() if last or sm.no_sync is None else sm.no_sync()
        with sync:
            with autocast(sm.device, sm.precision):
                live = sm.embed(batch, sm.model)
                terms = sm.objective(**_merge(cache, live, j, attach_scale=last))
            terms["loss"].backward()
    return terms


def _merge(cache: list[dict[str, Any]], live: dict[str, Any], j: int, attach_scale: bool) -> dict[str, Any]:
    """Full-batch objective inputs: micro-batch ``j`` from ``live`` (with graph), the rest from ``cache``."""
    merged: dict[str, Any] = {}
    for key, value in live.items():
        if isinstance(value, SideInputs):  # the per-sample side inputs: merged field by field
            fields = _merge([dict(c[key].items()) for c in cache], dict(value.items()), j, attach_scale)
            merged[key] = SideInputs(**fields)
        elif value is None:
            merged[key] = None
        elif key in SCALAR_KEYS:
            merged[key] = value if attach_scale else value.detach()
        else:
            parts = [c[key] for c in cache]
            parts[j] = value if key in GRAD_KEYS else parts[j]
            merged[key] = torch.cat(parts, dim=0)
    return merged


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Total gradient 2-norm (before clipping); clips to ``max_norm`` unless it is 0."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm


def nonfinite_terms(terms: dict[str, torch.Tensor]) -> list[str]:
    """Names of the loss terms (``loss`` and ``*_loss``) whose value is NaN or infinite."""
    return [
        f"{k}={v.item()}"
        for k, v in terms.items()
        if (k == "loss" or k.endswith("_loss")) and not math.isfinite(float(v.detach().float().item()))
    ]
