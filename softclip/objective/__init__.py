"""The SoftCLIP objective: targets, divergences, disentangled negatives, ROI aggregators (DESIGN.md).

Entry point: :class:`SoftCLIPObjective`; the registries ``TARGETS``, ``DIVERGENCES``, ``PAIRINGS`` hold the
config choices (``list_targets()`` etc. feed config validation, CLI help and the registry-driven tests).
"""

from softclip.objective.distributed import gather_no_grad, gather_with_grad, rank_and_world
from softclip.objective.divergences import DIVERGENCES, list_divergences
from softclip.objective.inputs import SideInputs
from softclip.objective.objective import SoftCLIPObjective
from softclip.objective.scoring import CONTRASTIVES, list_contrastives
from softclip.objective.targets import PAIRINGS, TARGETS, SideView, build_targets, list_pairings, list_targets

__all__ = [
    "CONTRASTIVES",
    "DIVERGENCES",
    "PAIRINGS",
    "TARGETS",
    "SideInputs",
    "SideView",
    "SoftCLIPObjective",
    "build_targets",
    "gather_no_grad",
    "gather_with_grad",
    "list_contrastives",
    "list_divergences",
    "list_pairings",
    "list_targets",
    "rank_and_world",
]

# ROI aggregators (softclip/objective/roi.py) register below.
from softclip.objective.roi import AGGREGATORS, build_aggregator, list_aggregators  # noqa: E402,F401
