"""AdamW with decoupled weight decay on weight matrices only, and the logit-scale clamp.

No weight decay on: parameters of normalisation layers, biases, any parameter with fewer than 2 dimensions
(class embeddings, gains), positional embeddings, and the logit scale / bias. Everything else decays, the
token-embedding table included (open_clip does the same).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from softclip.schema import OptimConfig

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    nn.RMSNorm,
)
NO_DECAY_NAMES = ("positional_embedding", "pos_embed", "logit_scale", "logit_bias")


def _named_trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, nn.Module]]:
    """(qualified name, parameter, owning module) for each trainable parameter, once each."""
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                yield (f"{mod_name}.{p_name}" if mod_name else p_name), p, module


def decays(name: str, param: nn.Parameter, module: nn.Module) -> bool:
    """Whether weight decay applies to ``param`` (see the module docstring)."""
    leaf = name.rsplit(".", 1)[-1]
    if isinstance(module, NORM_TYPES) or leaf == "bias" or leaf.endswith("_bias"):
        return False
    if param.ndim < 2:
        return False
    return not any(key in name for key in NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``decay`` (weight_decay) and ``no_decay`` (0), each with its parameter names.

    Returns:
        ``[{"name": "decay", "params": [...], "param_names": [...], "weight_decay": wd},
        {"name": "no_decay", ..., "weight_decay": 0.0}]``
        (a group is left out when empty).
    """
    groups = {"decay": ([], []), "no_decay": ([], [])}
    for name, p, module in _named_trainable(model):
        params, names = groups["decay" if decays(name, p, module) else "no_decay"]
        params.append(p)
        names.append(name)
    return [
        {
            "name": key,
            "params": params,
            "param_names": names,
            "weight_decay": weight_decay if key == "decay" else 0.0,
        }
        for key, (params, names) in groups.items()
        if params
    ]


def fused_supported(device: torch.device) -> bool:
    """Whether this torch build has the fused AdamW kernel for ``device`` (CUDA; CPU in torch >= 2.4)."""
    if device.type == "cuda":
        return True
    try:
        probe = nn.Parameter(torch.zeros(1, device=device))
        probe.grad = torch.zeros_like(probe)
        torch.optim.AdamW([probe], lr=1e-3, fused=True).step()
    except (RuntimeError, ValueError):
        return False
    return True


def build_optimizer(optim: OptimConfig, model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` from the ``optim`` config section (``lr``, ``weight_decay``, ``beta1``,
    ``beta2``, ``eps``, ``fused``); ``optim.fused=None`` uses the fused kernel wherever ``device`` supports it.

    On CPU the fused kernel is about 2.5x faster than the foreach one for a tiny model's embedding table
    (reports/perf/train.md), so it is the default there as well.
    """
    use_fused = fused_supported(device) if optim.fused is None else bool(optim.fused)
    groups = [
        {k: v for k, v in g.items() if k != "param_names"} for g in param_groups(model, optim.weight_decay)
    ]
    kwargs = {"fused": True} if use_fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps, **kwargs)


@torch.no_grad()
def clamp_logit_scale(logit_scale: nn.Parameter, max_scale: float) -> None:
    """Clamp the log logit scale to [0, ln max_scale] in place (open_clip does this after every step)."""
    logit_scale.clamp_(0.0, math.log(max_scale))
