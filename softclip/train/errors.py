"""The trainer's errors (the CLI reports them in one line with exit code 1)."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, too many skipped steps, no data, unusable checkpoint)."""


class NonFiniteLossError(TrainingError):
    """A non-finite loss or gradient under ``train.nan_policy=stop`` (or too many skipped steps)."""
