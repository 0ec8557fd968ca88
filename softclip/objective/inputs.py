"""The objective's per-sample inputs beside the two embeddings, as one typed value (:class:`SideInputs`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class SideInputs:
    """Per-sample inputs of :class:`softclip.objective.SoftCLIPObjective` beside U and V; N the local batch.

    Every field is optional: a target that needs one fails naming it. The model's ``forward`` builds it
    (:meth:`softclip.models.SoftCLIPModel.forward`), the objective reads it, and the names stay the same in
    between.

    Attributes:
        image_side: [N, a] image-side features A (the aggregated regions); None: the image embeddings U.
        text_side: [N, b] text-side features B (the tag embeddings); None: the text embeddings V.
        image_side_mask: [N] bool, False for samples without regions (None: all valid).
        text_side_mask: [N] bool, False for samples without tags (None: all valid).
        image_scene: int64 [N, T+1] image scene codes; text_scene: int64 [N, 2M+1] caption scene codes
            (:mod:`softclip.objective.oracle`; the batch's ``scene_image``/``scene_text``): the ``oracle``
            target needs them, and with any soft target they give the target-precision diagnostics.
        image_teacher, text_teacher: [N, d] L2-normalised embeddings of the EMA teacher's towers, read by the
            ``momentum`` target only.
    """

    image_side: torch.Tensor | None = None
    text_side: torch.Tensor | None = None
    image_side_mask: torch.Tensor | None = None
    text_side_mask: torch.Tensor | None = None
    image_scene: torch.Tensor | None = None
    text_scene: torch.Tensor | None = None
    image_teacher: torch.Tensor | None = None
    text_teacher: torch.Tensor | None = None

    def items(self) -> list[tuple[str, torch.Tensor | None]]:
        """(field name, value) pairs in declaration order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]
