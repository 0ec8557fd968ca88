"""Scene codes for tests that run every target: the ``oracle`` needs them, the others ignore them."""

from __future__ import annotations

import numpy as np
import torch

from softclip.data.synth.captions import make_caption, scene_codes
from softclip.data.synth.scenes import sample_scene
from softclip.data.synth.spec import SynthConfig
from softclip.objective.oracle import relevance


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


def scene_kwargs(target: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``image_scene``/``text_scene`` for the oracle target, nothing for the others."""
    if target != "oracle":
        return {}
    image, caption = codes(n, seed)
    return {"image_scene": image, "text_scene": caption}


def relevant(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(i2t, t2i) truth [n, n] of :func:`codes`, as the objective hands them to the targets."""
    image, caption = codes(n, seed)
    rel = relevance(image, caption)
    return rel, rel.T.contiguous()
