"""Process group set-up for torchrun and SLURM, and the few collectives the trainer needs.

Launch modes, all reading the ``env://`` variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):

- plain ``python``: no variables, one process, no process group;
- ``torchrun``: it sets the variables;
- SLURM (``srun`` or submitit): when SLURM task variables exist and RANK does not, submitit's
  ``TorchDistributedEnvironment().export()`` derives them from the SLURM job.

Backends: gloo on CPU, nccl on CUDA (one device per local rank).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("softclip.train")

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job.

    Attributes:
        rank, world_size, local_rank: as torchrun defines them (0, 1, 0 for a single process).
        device: the device this rank trains on.
        backend: the process-group backend, or None when not distributed.
        owns_group: whether :func:`setup` created the process group (and :func:`cleanup` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> a torch device (CUDA: the local rank's GPU among the visible ones)."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _in_slurm_step() -> bool:
    """True inside an ``srun`` step of a multi-task SLURM job that torchrun did not already set up."""
    env = os.environ
    return (
        "RANK" not in env
        and "SLURM_JOB_ID" in env
        and "SLURM_STEP_ID" in env
        and int(env.get("SLURM_NTASKS", "1")) > 1
    )


def setup(device_kind: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Read the launch environment, pick the device and initialise the process group when W > 1.

    Args:
        device_kind: ``train.device`` (auto, cpu, cuda).
        timeout_s: collective timeout.
    """
    if _in_slurm_step():
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_kind, local_rank)
    if world <= 1:
        return DistEnv(device=device)
    backend = BACKENDS[device.type]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    log.info("rank %d/%d (local %d) on %s, backend %s", rank, world, local_rank, device, backend)
    return DistEnv(rank, world, local_rank, device, backend, owns)


def cleanup(env: DistEnv) -> None:
    """Destroy the process group this module created."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (small picklable values: paths, flags, messages)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order (small values: RNG states, data positions)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce(tensor: torch.Tensor, env: DistEnv, op: str = "mean") -> torch.Tensor:
    """A reduced copy of ``tensor`` over ranks: ``mean``, ``sum``, ``min`` or ``max``."""
    if not env.distributed:
        return tensor.detach().clone()
    out = tensor.detach().clone()
    ops = {
        "mean": dist.ReduceOp.SUM,
        "sum": dist.ReduceOp.SUM,
        "min": dist.ReduceOp.MIN,
        "max": dist.ReduceOp.MAX,
    }
    dist.all_reduce(out, op=ops[op])
    return out / env.world_size if op == "mean" else out
