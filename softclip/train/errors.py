"""The trainer's errors (the CLI reports them in one line: exit code 1, or 2 for :class:`RunLockedError`)."""

from __future__ import annotations

from softclip.errors import SoftclipError


class TrainingError(SoftclipError, RuntimeError):
    """A run that cannot go on (diverged, too many skipped steps, no data, unusable checkpoint)."""


class NonFiniteLossError(TrainingError):
    """A non-finite loss or gradient under ``train.nan_policy=stop`` (or too many skipped steps)."""


class RunLockedError(TrainingError):
    """The run folder is owned by another live trainer (or this one lost it); exit code 2."""

    exit_code = 2


class RunFolderError(TrainingError, FileExistsError):
    """A ``--run-dir`` that holds something other than a run (a user's files, an unreadable record); exit code 2."""

    exit_code = 2


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the run was checkpointed; the message says what was saved and how to go on."""
