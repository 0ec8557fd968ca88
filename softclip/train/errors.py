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


class SignalReceived(KeyboardInterrupt):
    """A stop signal from a scheduler (SIGTERM, SIGUSR1/2) raised in the main thread, handled like Ctrl-C;
    ``exit_code`` is the shell's ``128 + signum`` (143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.name} outside a training step (nothing new to checkpoint); "
                         "run the same command again to go on")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a stop signal) during training, after the run was checkpointed; the message says what was saved
    and how to go on. ``exit_code``: 130 for Ctrl-C, ``128 + signum`` for the others (143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
