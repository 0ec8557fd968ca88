"""FAISS-backed evaluation harness: zero-shot, retrieval, instance (rOxford/rParis) and copy detection.

- :func:`run_suite` / :func:`evaluate_checkpoint` (``harness``): suites -> one JSON per (run, benchmark).
- ``EVALUATORS`` (``base``): ``zeroshot``, ``retrieval``, ``instance``, ``copydays``; each
  ``evaluate(model, dataset, cfg) -> dict[str, float]``.
- ``metrics``: pure metric math; ``search``: the one FAISS wrapper; ``embed``: cached batched extraction.
"""

from softclip.evaluation import copydays, instance, retrieval, zeroshot  # noqa: F401  (registration)
from softclip.evaluation.base import EVALUATORS, EvalContext, Evaluator, list_evaluators
from softclip.evaluation.harness import evaluate_checkpoint, flat_metrics, run_suite
from softclip.evaluation.search import GalleryIndex, SearchConfig, search
from softclip.evaluation.suite import SuiteError, read_suite

__all__ = [
    "EVALUATORS",
    "EvalContext",
    "Evaluator",
    "GalleryIndex",
    "SearchConfig",
    "SuiteError",
    "evaluate_checkpoint",
    "flat_metrics",
    "list_evaluators",
    "read_suite",
    "run_suite",
    "search",
]
