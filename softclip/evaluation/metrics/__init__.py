"""Pure metric math: ranks (or top-k id lists) in, numbers out. No I/O, no models, no search.

Conventions used by every function here:

- All returned metric values are percentages in [0, 100] (ranks stay ranks).
- A *top-k list* is an int array [n_query, K] of gallery ids, best first, as the search wrapper returns it;
  ties in score are broken by the lower gallery id first (``softclip.evaluation.search``). ``-1`` pads a list
  shorter than K and never matches anything.
- A *rank* is 1-based (the best item has rank 1) unless a name says ``pos`` (0-based positions, revisitop's
  convention).
- Two average-precision definitions exist on purpose and each has one implementation:
  :func:`trapezoid_ap` (the Holidays / revisitop / Copydays evaluation packages' AP, used for instance retrieval
  and copy detection so numbers compare with published ones) and :func:`average_precision` (the usual
  non-interpolated AP, mean over relevant items of the precision at their rank, used for semantic retrieval).
"""

from __future__ import annotations

from softclip.evaluation.metrics.classification import (
    attribute_accuracy,
    mean_per_class_recall,
    prompt_ensemble,
    topk_accuracy,
)
from softclip.evaluation.metrics.instance import (
    PROTOCOLS,
    copy_detection_map,
    junk_adjusted_positions,
    protocol_gnd,
    revisitop_map,
    trapezoid_ap,
)
from softclip.evaluation.metrics.losses import info_nce
from softclip.evaluation.metrics.retrieval import (
    average_precision,
    items_of,
    rank_statistics,
    retrieval_recalls,
    rsum,
    semantic_retrieval,
)

__all__ = [
    "PROTOCOLS",
    "attribute_accuracy",
    "average_precision",
    "copy_detection_map",
    "info_nce",
    "items_of",
    "junk_adjusted_positions",
    "mean_per_class_recall",
    "prompt_ensemble",
    "protocol_gnd",
    "rank_statistics",
    "retrieval_recalls",
    "revisitop_map",
    "rsum",
    "semantic_retrieval",
    "topk_accuracy",
    "trapezoid_ap",
]
