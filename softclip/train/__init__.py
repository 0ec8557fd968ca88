"""The trainer: loop, optimisation, distributed set-up, checkpoints and logging (DESIGN.md, 'Training').

Entry point: :func:`train` (``softclip train CONFIG`` calls it). :class:`TrainJob` wraps it for submitit
(requeue through :func:`save_now`).
"""

from softclip.checkpoint import CheckpointError, load_checkpoint
from softclip.train.errors import NonFiniteLossError, TrainingError
from softclip.train.requeue import TrainJob
from softclip.train.run import save_now, train
from softclip.train.rundir import RunFinishedError

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "RunFinishedError",
    "TrainJob",
    "TrainingError",
    "load_checkpoint",
    "save_now",
    "train",
]
