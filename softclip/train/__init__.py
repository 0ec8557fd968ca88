"""The trainer: loop, optimisation, distributed set-up, checkpoints and logging (DESIGN.md, 'Training').

Entry point: :func:`train` (``softclip train CONFIG`` calls it). On SLURM, the launchers' ``ResumableCall``
calls :func:`save_now` on the timeout or preemption signal and requeues the job, which resumes.
"""

from softclip.checkpoint import CheckpointError, load_checkpoint
from softclip.train.errors import NonFiniteLossError, TrainingError
from softclip.train.run import save_now, train
from softclip.train.rundir import RunFinishedError

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "RunFinishedError",
    "TrainingError",
    "load_checkpoint",
    "save_now",
    "train",
]
