"""Which captions truly describe which images, from scene codes: the relevance the ``oracle`` target uses.

A positive control that only a generated benchmark can offer (SynthScenes writes each sample's objects and what
its caption mentions). The rule is the generator's own (``softclip.data.synth.captions.describes``): caption c
describes image i iff every object c mentions is in i with the mentioned colour and shape (and size, where c
names one), and, for a count caption, i holds exactly that many objects.

Scene codes (int64 tensors, one row per sample; the loader's ``scene_image`` / ``scene_text``):

* image code [N, T + 1]: column t (an object type, shape × colour) is 0 when absent, 1 + size index when
  present; the last column is the number of objects;
* caption code [N, 2·M + 1]: M mentioned object types (−1 pads), M size requirements (0: any size, else
  1 + size index), then the count the caption states (−1: none).
"""

from __future__ import annotations

import torch


def relevance(image_code: torch.Tensor, caption_code: torch.Tensor) -> torch.Tensor:
    """bool [I, C], entry (i, c) True iff caption c describes image i.

    Args:
        image_code: int64 [I, T + 1].
        caption_code: int64 [C, 2·M + 1].
    """
    if image_code.dim() != 2 or caption_code.dim() != 2 or caption_code.shape[1] % 2 != 1:
        raise ValueError(f"scene codes must be [I, T+1] and [C, 2M+1], got {tuple(image_code.shape)} and "
                         f"{tuple(caption_code.shape)}")  # fmt: skip
    m = (caption_code.shape[1] - 1) // 2
    types, req, count = caption_code[:, :m], caption_code[:, m : 2 * m], caption_code[:, -1]
    present = image_code[:, :-1][:, types.clamp_min(0)]  # [I, C, M]: 0 absent, 1 + size
    hit = (present > 0) & ((req == 0) | (present == req)).expand_as(present)
    ok = (hit | (types < 0)).all(dim=2)
    return ok & ((count < 0) | (count == image_code[:, -1:]))
