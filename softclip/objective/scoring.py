"""The objective's small registries: how a block of logits is scored and by which implementation
(``loss.contrastive``, ``loss.impl``), and the ROI<->tag term's scale (``loss.roi_logit_scale``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from softclip.objective import losses, reference, sigmoid
from softclip.registry import Registry

# loss.impl: the path that computes the per-direction terms; each entry is a class whose instances (one per
# objective) have ``terms(logits, log_y, keep, spec)`` (the contract of reference.direction_terms),
# ``kept_rows(log_y, offset)`` (the rows the relation-enhanced term keeps) and ``target_blocks(like)`` (scratch
# blocks the targets are built in, or None)
IMPLS: Registry = Registry("loss.impl")
IMPLS.register("reference")(reference.ReferencePath)
IMPLS.register("fused")(losses.FusedPath)

# loss.contrastive: how a block of logits is scored; each entry maps the loss.impl path to the per-direction terms
CONTRASTIVES: Registry = Registry("loss.contrastive")


@CONTRASTIVES.register("infonce")
def _infonce_terms(path: reference.ReferencePath | losses.FusedPath) -> Callable:
    """Softmax over the batch (CLIP): the ``loss.impl`` path's terms."""
    return path.terms


@CONTRASTIVES.register("sigmoid")
def _sigmoid_terms(path: reference.ReferencePath | losses.FusedPath) -> Callable:
    """Pairwise sigmoid (SigLIP): one implementation, plain autograd, whatever ``loss.impl``."""
    return sigmoid.direction_terms


# targets that read the other modality (truth, teacher similarities): row i of i2t is image i's, so the two
# directions cannot swap or share sides
CROSS_MODAL_TARGETS = ("oracle", "momentum")


def check_combination(contrastive: str, re_weight: float, target: str, pairing: str) -> None:
    """The loss keys that constrain each other (the schema and the objective both call this); ValueError."""
    if contrastive == "sigmoid" and re_weight > 0:
        raise ValueError(
            f"loss.re_weight={re_weight} with loss.contrastive=sigmoid: the disentangled-negatives term "
            "renormalises a softmax, which the sigmoid loss has not; set loss.re_weight=0"
        )
    if target in CROSS_MODAL_TARGETS and pairing != "same":
        raise ValueError(
            f"loss.pairing={pairing} with loss.target={target}: this target is built per direction from the "
            "other modality (its i2t rows are the images'), so it takes loss.pairing=same"
        )


# loss.roi_logit_scale: the multiplier of the ROI<->tag InfoNCE, from CLIP's s
ROI_SCALES: Registry = Registry("loss.roi_logit_scale")


@ROI_SCALES.register("shared")
def _shared_scale(s: torch.Tensor) -> torch.Tensor:
    """s itself: the ROI term trains CLIP's logit scale too."""
    return s


@ROI_SCALES.register("detached")
def _detached_scale(s: torch.Tensor) -> torch.Tensor:
    """s's value without its gradient: only the CLIP terms train s."""
    return s.detach()


def list_contrastives() -> list[str]:
    """Registered ``loss.contrastive`` names."""
    return CONTRASTIVES.names()
