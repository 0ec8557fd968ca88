"""Cross-modal inputs for tests that run every target: scene codes (the ``oracle`` needs them) and EMA-teacher
embeddings (the ``momentum`` target needs them); the other targets ignore both."""

from __future__ import annotations

import numpy as np
import torch

from softclip.data.synth.captions import make_caption, scene_codes
from softclip.data.synth.scenes import sample_scene
from softclip.data.synth.spec import SynthConfig
from softclip.objective import PAIRINGS, TARGETS
from softclip.objective.oracle import relevance
from softclip.objective.scoring import CROSS_MODAL_TARGETS

# (target, pairing) pairs the objective accepts: the cross-modal targets are built per direction (pairing same)
TARGET_PAIRINGS = [
    (t, p) for t in TARGETS.names() for p in PAIRINGS.names() if t not in CROSS_MODAL_TARGETS or p == "same"
]


def bias_kwargs(contrastive: str, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """``logit_bias`` for the sigmoid loss, nothing for InfoNCE."""
    return {"logit_bias": torch.tensor(-2.0, dtype=dtype)} if contrastive == "sigmoid" else {}


def codes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(image codes, caption codes) of ``n`` generated samples over 4 object types (so captions often describe
    other images of the batch too)."""
    spec = SynthConfig.preset("smoke", n_shapes=2, n_colours=2)
    rng = np.random.default_rng(1000 + seed)
    pairs = []
    for _ in range(n):
        objs = sample_scene(rng, spec, spec.image_size)
        pairs.append(scene_codes([o.to_json() for o in objs], make_caption(rng, spec, objs)[0].to_json()))
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def teacher(n: int, dim: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """``image_teacher``/``text_teacher``: [n, dim] L2-normalised stand-ins for an EMA teacher's embeddings."""
    g = torch.Generator().manual_seed(500 + seed)
    feats = [torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=1) for _ in range(2)]
    return {"image_teacher": feats[0], "text_teacher": feats[1]}


def scene_kwargs(target: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``image_scene``/``text_scene`` for the oracle target, teacher embeddings for the momentum target,
    nothing for the others."""
    if target == "momentum":
        return teacher(n, seed=seed)
    if target != "oracle":
        return {}
    image, caption = codes(n, seed)
    return {"image_scene": image, "text_scene": caption}


def relevant(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(i2t, t2i) truth [n, n] of :func:`codes`, as the objective hands them to the targets."""
    image, caption = codes(n, seed)
    rel = relevance(image, caption)
    return rel, rel.T.contiguous()
