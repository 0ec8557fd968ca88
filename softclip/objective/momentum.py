"""Momentum distillation (ALBEF, arXiv 2107.07651): the EMA teacher's update and its cross-modal logits.

The teacher is an exponential moving average of both towers, θ_m ← m·θ_m + (1 − m)·θ after every optimiser step
(``loss.momentum``, ALBEF's 0.995), never trained by gradient. Its embeddings give the ``momentum`` target
(:func:`softclip.objective.targets.momentum_target`): Y^{i2t} = (1 − β)·I + β·softmax(s·U_m V_mᵀ), Y^{t2i}
likewise, with the student's scale s (ALBEF shares its temperature between the two).
"""

from __future__ import annotations

import torch
from torch import nn

from softclip.objective.distributed import gather_no_grad


def teacher_logits(
    image_t: torch.Tensor | None, text_t: torch.Tensor | None, s: torch.Tensor, n: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(i2t, t2i) teacher logits [N_l, N_g]: s·U_m V_m,gᵀ and s·V_m U_m,gᵀ.

    Args:
        image_t, text_t: [N_l, d] L2-normalised teacher embeddings of the local batch (None: no teacher).
        s: the student's scale (its value only).
        n: N_l, the local batch size the embeddings must have.

    Returns:
        The two blocks (columns all-gathered without gradient under torch.distributed), or (None, None).
    """
    if image_t is None or text_t is None:
        return None, None
    for feats, name in ((image_t, "image_teacher"), (text_t, "text_teacher")):
        if feats.dim() != 2 or feats.shape[0] != n:
            raise ValueError(f"{name} must be [{n}, d] teacher embeddings, got {tuple(feats.shape)}")
    with torch.no_grad():
        u_m, v_m, scale = image_t.detach().to(s.dtype), text_t.detach().to(s.dtype), s.detach()
        return scale * u_m @ gather_no_grad(v_m).T, scale * v_m @ gather_no_grad(u_m).T


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_m ← m·θ_m + (1 − m)·θ for every parameter (one foreach lerp); buffers (BatchNorm statistics) are copied.

    ``teacher`` and ``student`` must have the same architecture (the teacher starts as a deep copy).
    """
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}: not the same towers")
    torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        t_buf.copy_(s_buf)
