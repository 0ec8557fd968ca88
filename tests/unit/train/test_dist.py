"""Launch environments: plain process, torchrun variables, SLURM through submitit's exporter."""

from __future__ import annotations

import pytest
import torch

from softclip.train import dist


def test_single_process_has_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    env = dist.setup("cpu")
    assert env == dist.DistEnv() and env.is_main and not env.distributed and not env.owns_group
    x = torch.tensor([1.0, 3.0])
    assert dist.all_reduce(x, env, op="mean").tolist() == [1.0, 3.0]
    assert dist.gather_objects({"a": 1}, env) == [{"a": 1}]
    assert dist.broadcast_object("x", env) == "x"
    dist.barrier(env)
    dist.cleanup(env)


def test_slurm_step_exports_the_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    calls = []

    class FakeEnvironment:  # stands in for submitit.helpers.TorchDistributedEnvironment
        def export(self, set_cuda_visible_devices: bool = True) -> FakeEnvironment:
            calls.append(set_cuda_visible_devices)
            monkeypatch.setenv("RANK", "0")
            monkeypatch.setenv("WORLD_SIZE", "1")  # one task's view, so no group is started here
            monkeypatch.setenv("LOCAL_RANK", "0")
            return self

    import submitit.helpers

    monkeypatch.setattr(submitit.helpers, "TorchDistributedEnvironment", FakeEnvironment)
    assert dist._in_slurm_step()
    env = dist.setup("cpu")
    assert calls == [False] and env.world_size == 1
    monkeypatch.setenv("RANK", "0")  # torchrun inside SLURM: leave its variables alone
    assert not dist._in_slurm_step()


def test_single_task_slurm_job_is_not_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not dist._in_slurm_step()


def test_device_resolution() -> None:
    assert dist.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dist.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            dist.resolve_device("cuda")
