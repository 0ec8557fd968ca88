"""Cluster YAML schema: where and how submitit jobs run (partition, account, GPUs, CPUs, memory, time).

A cluster file (``clusters/*.yaml``) is the only place a partition or account is written; nothing in code names
one. ``clusters/example.yaml`` documents every key; ``clusters/local.yaml`` is the single-node CI cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from softclip.config import ConfigError, format_validation_error, read_yaml

PosInt = Annotated[int, Field(ge=1)]


class ClusterConfig(BaseModel):
    """One cluster's submission settings (mirrors sbatch options; see clusters/example.yaml)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("cluster", description="label used in job names and logs")
    executor: Literal["slurm", "local"] = Field("slurm", description="slurm: sbatch; local: submitit's local")
    partition: str | None = Field(None, description="sbatch --partition (None: the cluster's default)")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    constraint: str | None = Field(None, description="sbatch --constraint, e.g. volta32gb")
    exclude: str | None = Field(None, description="sbatch --exclude node list")
    nodes: PosInt = Field(1, description="nodes per job (multi-node DDP through TorchDistributedEnvironment)")
    tasks_per_node: PosInt = Field(1, description="processes per node; one per GPU for DDP")
    gpus_per_node: Annotated[int, Field(ge=0)] = Field(0, description="GPUs per node (0: CPU jobs)")
    cpus_per_task: PosInt | None = Field(None, description="CPUs per task (None: launcher.cpus_per_job)")
    mem_gb: Annotated[float, Field(gt=0)] | None = Field(None, description="memory per node in GB")
    timeout_min: PosInt = Field(60, description="wall time per job; jobs are requeued on timeout")
    max_num_timeout: Annotated[int, Field(ge=0)] = Field(3, description="requeues allowed after timeouts")
    signal_delay_s: Annotated[int, Field(ge=1)] = Field(
        90, description="seconds between the USR2 warning (checkpoint + requeue) and the kill"
    )
    array_parallelism: PosInt | None = Field(None, description="max array tasks at once (None: launcher.workers)")
    use_srun: bool = Field(True, description="run the job through srun (required for multi-task jobs)")
    setup: list[str] = Field(default_factory=list, description="shell lines run before the job (module load ...)")
    python: str | None = Field(None, description="python executable on the nodes (None: this interpreter)")
    folder: str = Field("runs/submitit", description="submitit logs and pickles; a subfolder per sweep/ablation")
    additional: dict[str, Any] = Field(default_factory=dict, description="extra sbatch options, key -> value")

    def slurm_parameters(self, cpus_per_job: int, workers: int, job_name: str) -> dict[str, Any]:
        """Keyword arguments for ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.timeout_min,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task or cpus_per_job,
            "signal_delay_s": self.signal_delay_s,
            "array_parallelism": self.array_parallelism or workers,
            "use_srun": self.use_srun,
            "setup": list(self.setup),
        }
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "constraint": self.constraint,
            "exclude": self.exclude,
            "gpus_per_node": self.gpus_per_node or None,
            "mem": _mem(self.mem_gb) if self.mem_gb else None,
            "additional_parameters": dict(self.additional) or None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params

    def local_parameters(self) -> dict[str, Any]:
        """Keyword arguments for ``submitit.LocalExecutor.update_parameters``."""
        return {
            "timeout_min": self.timeout_min,
            "tasks_per_node": self.tasks_per_node,
            "gpus_per_node": self.gpus_per_node,
            "signal_delay_s": self.signal_delay_s,
        }


def load_cluster(path: str | Path | None) -> ClusterConfig:
    """Read and validate a cluster YAML (None: all defaults). Errors are ConfigErrors naming the key."""
    if path is None:
        return ClusterConfig()
    data = read_yaml(path)
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, str(path), ClusterConfig)) from None


def _mem(mem_gb: float) -> str:
    """sbatch --mem text: whole GB as ``8GB``, fractions in MB."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"
