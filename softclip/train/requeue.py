"""A submitit-friendly training job: ``__call__`` trains, ``checkpoint()`` saves now and resubmits.

submitit calls ``job.checkpoint()`` from its preemption / timeout signal handler on rank 0, then requeues the
returned ``DelayedSubmission``; the requeued job calls ``train`` on the same folder, which resumes. Saving is
safe at any moment: updates run with submitit's signals held back, and the saved state is that of the last
completed step (under DDP the periodic checkpoints are used instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softclip.config import Config
from softclip.train.loop import Evaluate
from softclip.train.run import save_now, train


class TrainJob:
    """A picklable training call.

    Args:
        config: the resolved config (a Config or its ``to_dict()``).
        run_dir: the run folder (resumed when it holds checkpoints).
        evaluate: optional picklable evaluator, as for :func:`softclip.train.train`.
    """

    def __init__(
        self, config: Config | dict[str, Any], run_dir: str | Path, evaluate: Evaluate | None = None
    ) -> None:
        self.config = config.to_dict() if isinstance(config, Config) else dict(config)
        self.run_dir = str(run_dir)
        self.evaluate = evaluate

    def __call__(self) -> str:
        return str(train(Config.model_validate(self.config), self.run_dir, evaluate=self.evaluate))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Save now (if this process is training) and return the resubmission of the same job."""
        from submitit.helpers import DelayedSubmission

        save_now()
        return DelayedSubmission(TrainJob(self.config, self.run_dir, self.evaluate), *args, **kwargs)
