"""Subprocess entry for the trainer's integration tests.

``python tests/integration/train_entry.py CONFIG [--run-dir DIR] [--overwrite] [key=value ...]`` runs
``softclip train`` through ``softclip.cli.main`` when the CLI has a ``train`` command, else through
``softclip.train.train`` with the same arguments and exit codes (0 ok, 1 failed run, 2 config error).

``--merge-ranks W`` (single process only) feeds the trainer, at each step, the concatenation of what W
torchrun ranks would read: the single-process reference of the DDP test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere without installing


class MergedRanks:
    """A TrainLoader stand-in whose batch ``b`` is every rank's batch ``b``, concatenated in rank order."""

    def __init__(self, loaders: list) -> None:
        self.loaders = loaders
        self.bad = loaders[0].bad

    @property
    def epoch(self) -> int:
        return self.loaders[0].epoch

    def state_dict(self) -> list[dict]:
        return [loader.state_dict() for loader in self.loaders]

    def load_state_dict(self, state: list[dict]) -> None:
        for loader, s in zip(self.loaders, state, strict=True):
            loader.load_state_dict(s)

    def __iter__(self):
        its = [iter(loader) for loader in self.loaders]
        while True:
            parts = [next(it, None) for it in its]
            if any(p is None for p in parts):
                if not all(p is None for p in parts):
                    raise RuntimeError("ranks disagree on the number of batches")
                return
            yield {k: (torch.cat([p[k] for p in parts]) if torch.is_tensor(parts[0][k])
                       else sum((p[k] for p in parts), [])) for k in parts[0]}  # fmt: skip


def merge_ranks(world: int) -> None:
    """Patch the trainer's data set-up so one process reads like ``world`` ranks together."""
    from softclip.train import run
    from softclip.train.dist import DistEnv

    original = run.setup_data

    def setup_data(cfg, env, preprocess, tokenizer):
        return MergedRanks([original(cfg, DistEnv(rank=r, world_size=world), preprocess, tokenizer)
                            for r in range(world)])  # fmt: skip

    run.setup_data = setup_data


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--merge-ranks", type=int, default=0)
    p.add_argument("overrides", nargs="*")
    args = p.parse_intermixed_args(argv)
    if args.merge_ranks:
        merge_ranks(args.merge_ranks)
    from softclip import cli

    if "train" in cli.COMMANDS:
        extra = (["--run-dir", args.run_dir] if args.run_dir else []) + (["--overwrite"] if args.overwrite else [])
        # overrides right after CONFIG: argparse cannot take positionals after options there
        return cli.main(["train", args.config, *args.overrides, *extra])
    return _direct(args)


def _direct(args: argparse.Namespace) -> int:
    import logging

    from softclip.config import ConfigError, load_config
    from softclip.train import TrainingError, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(load_config(args.config, args.overrides), args.run_dir, overwrite=args.overwrite)
    except ConfigError as err:
        print(f"softclip: config error: {err}", file=sys.stderr)
        return 2
    except (TrainingError, FileExistsError, FileNotFoundError) as err:
        print(f"softclip: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
