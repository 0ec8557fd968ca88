"""The typed configuration schema: one section per component (what each component takes), every default once;
also the cluster file's schema (:class:`ClusterConfig`).

:mod:`softclip.config` loads YAML into it (``base:`` chains, profiles, overrides) and re-exports these names.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from softclip.data.synth.spec import SynthConfig

MOMENTUM_BETA = 0.4  # ALBEF's α (salesforce/ALBEF configs/Pretrain.yaml)
SCENE_SOURCES = ("synth", "wds")  # data sources whose samples can carry scene annotations (loss.target=oracle)

NonNegFloat = Annotated[float, Field(ge=0.0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


def _distinct(seeds: list[int]) -> list[int]:
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError("needs at least one seed, without repeats")
    return seeds


#: training seeds of an ablation variant or a sweep trial: each names a run folder, so none repeats
Seeds = Annotated[list[int], AfterValidator(_distinct)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _choice(value: str, names: list[str], key: str) -> str:
    if value not in names:
        hint = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"must be one of: {', '.join(names)}{extra}")
    return value


class ModelConfig(_Section):
    """Towers: any open_clip config name (trained from scratch) or a tiny preset from softclip/model_configs."""

    name: str = Field("tiny-vit", description="open_clip model config name, e.g. tiny-vit, RN50, ViT-B-32")


class RoiConfig(_Section):
    """ROI aggregator that turns per-image region features into the image-side self-similarity feature A."""

    aggregation: str = Field(
        "mean", description="mean | max | min (parameter-free pooling) | mean_proj (mean + learned linear "
        "projection) | mhsa (see list_aggregators())"
    )
    train: Literal["learn", "frozen"] = Field("learn", description="learn the aggregator (γ·L_roi) or freeze it")
    width: PosInt = 256
    layers: PosInt = 1
    heads: PosInt = 4
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @field_validator("aggregation")
    @classmethod
    def _known_aggregation(cls, v: str) -> str:
        from softclip.objective.roi import list_aggregators

        return _choice(v, list_aggregators(), "roi.aggregation")


class LossConfig(_Section):
    """The SoftCLIP objective (DESIGN.md, 'The SoftCLIP objective'). Paper defaults."""

    target: str = Field(
        "selfsim",
        description="hard | label_smoothing | selfsim | momentum (an EMA teacher's similarities, ALBEF) | oracle "
        "(SynthScenes' true matches, a positive control)",
    )
    beta: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.3, description="β, weight of the soft part (default 0.3; 0.4, ALBEF's α, for target momentum)"
    )
    contrastive: str = Field(
        "infonce", description="infonce (softmax over the batch, CLIP) | sigmoid (pairwise, SigLIP; needs re_weight 0)"
    )
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.995, description="EMA momentum m of the teacher towers (target momentum): θ_m ← m·θ_m + (1 − m)·θ"
    )
    tau: Annotated[float, Field(gt=0.0)] = Field(0.07, description="τ, self-similarity temperature")
    divergence: str = Field("symkl", description="kl | symkl | ce: the divergence of L_soft (and of L_re unless "
                            "re_divergence says otherwise)")
    re_divergence: str | None = Field(
        None, description="kl | symkl | ce: the divergence of the disentangled-negatives term L_re; null: the same "
        "as divergence (so the two terms' divergences can be ablated apart)"
    )
    oracle_precision: float | Literal["share"] = Field(
        1.0, description="target oracle: fraction p in [0, 1] of its off-diagonal mass on true matches, the rest on "
        "non-matches (1: all on true matches, the positive control; share: each row's share of true matches, i.e. "
        "uninformative smoothing); softclip/objective/targets.py oracle_target"
    )
    pairing: str = Field("same", description="same | cross | mean")
    image_source: Literal["roi", "image"] = "roi"
    text_source: Literal["tag", "text"] = "tag"
    nce_weight: NonNegFloat = 1.0
    soft_weight: NonNegFloat = Field(1.0, description="λ")
    re_weight: NonNegFloat = Field(0.5, description="µ")
    roi_weight: NonNegFloat = Field(1.0, description="γ, auxiliary ROI↔tag InfoNCE when the aggregator learns")
    roi_logit_scale: Literal["shared", "detached"] = Field(
        "detached", description="ROI↔tag InfoNCE multiplier: CLIP's s by value, without gradient into it, so the "
        "auxiliary loss cannot move CLIP's logit scale (detached, default) or trained by it too (shared)"
    )
    reverse_floor: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        1e-8, description="floor of y in the reverse KL term KL(P‖Y), which is infinite where y = 0 < p"
    )
    one_hot_rows: Literal["forward", "floored"] = Field(
        "forward", description="target rows with one nonzero entry: forward KL only (= InfoNCE) or floored reverse"
    )
    impl: Literal["reference", "fused"] = Field(
        "fused", description="reference (plain autograd, the definition) or fused (hand-written backward)"
    )

    # what the loss asks of the data and the model, derived here once

    @property
    def reads_regions(self) -> bool:
        """The image side is aggregated regions: the model needs an ROI aggregator and batches their regions."""
        return self.image_source == "roi"

    @property
    def reads_sidecars(self) -> bool:
        """Some side reads the ROI/tag sidecars (regions for the image side, tags for the text side)."""
        return self.image_source == "roi" or self.text_source == "tag"

    @property
    def reads_scenes(self) -> bool:
        """The target needs each sample's scene codes (``oracle``)."""
        return self.target == "oracle"

    @property
    def teacher_momentum(self) -> float | None:
        """EMA momentum m of the teacher towers the target reads (``momentum``), None for no teacher."""
        return self.momentum if self.target == "momentum" else None

    @property
    def learns_bias(self) -> bool:
        """The towers carry a learnable logit bias b (the ``sigmoid`` loss)."""
        return self.contrastive == "sigmoid"

    @model_validator(mode="before")
    @classmethod
    def _momentum_beta(cls, data: Any) -> Any:
        """β defaults to ALBEF's α = 0.4 for the momentum target (an explicit β wins)."""
        if isinstance(data, dict) and data.get("target") == "momentum" and "beta" not in data:
            return {**data, "beta": MOMENTUM_BETA}
        return data

    @model_validator(mode="after")
    def _keys_that_constrain_each_other(self) -> LossConfig:
        from softclip.objective.scoring import check_combination

        check_combination(self.contrastive, self.re_weight, self.target, self.pairing)
        return self

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        from softclip.objective.targets import list_targets

        return _choice(v, list_targets(), "loss.target")

    @field_validator("contrastive")
    @classmethod
    def _known_contrastive(cls, v: str) -> str:
        from softclip.objective.scoring import list_contrastives

        return _choice(v, list_contrastives(), "loss.contrastive")

    @field_validator("divergence")
    @classmethod
    def _known_divergence(cls, v: str) -> str:
        from softclip.objective.divergences import list_divergences

        return _choice(v, list_divergences(), "loss.divergence")

    @field_validator("re_divergence")
    @classmethod
    def _known_re_divergence(cls, v: str | None) -> str | None:
        from softclip.objective.divergences import list_divergences

        return None if v is None else _choice(v, list_divergences(), "loss.re_divergence")

    @field_validator("oracle_precision", mode="before")
    @classmethod
    def _oracle_precision(cls, v: Any) -> Any:
        from softclip.objective.targets import check_oracle_precision

        if isinstance(v, str) and v != "share":
            raise ValueError(f"must be a number in [0, 1] or 'share', got {v!r}")
        check_oracle_precision(v)
        return v

    @field_validator("pairing")
    @classmethod
    def _known_pairing(cls, v: str) -> str:
        from softclip.objective.targets import list_pairings

        return _choice(v, list_pairings(), "loss.pairing")


class DataConfig(_Section):
    """Training data. ``source: synth`` generates SynthScenes under ``root`` when absent."""

    source: Literal["synth", "wds", "csv"] = "synth"
    root: str = Field("data/synthscenes", description="dataset folder (synth: generated here when absent)")
    train: str | None = Field(None, description="wds: shard folder or brace pattern; default ROOT/train")
    csv: str | None = None
    features_tsv: str | None = None
    labels_tsv: str | None = None
    images_root: str | None = None
    batch_size: PosInt = Field(128, description="global batch per optimiser step (split over ranks and accum_steps)")
    workers: NonNegInt = 0
    shuffle_buffer: NonNegInt = 1000
    resampled: bool = False
    kmax: PosInt = Field(8, description="regions per image kept after padding/truncation")
    sidecars: bool = Field(True, description="read ROI sidecars (.roi.npy, .tags.json); false for plain CLIP data")
    roi_dim: Annotated[int, Field(ge=7, le=65536)] | None = Field(
        None, description="region feature width D (last 6 = box geometry); None: data.synth.detector.roi_dim "
        "for source synth, 2054 (VinVL) otherwise"
    )
    max_bad_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    epoch_samples: PosInt | None = None
    synth: SynthConfig = Field(default_factory=SynthConfig)


class OptimConfig(_Section):
    """AdamW with cosine schedule and linear warmup."""

    lr: Annotated[float, Field(gt=0.0)] = 5e-4
    weight_decay: NonNegFloat = 0.1
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.98
    eps: Annotated[float, Field(gt=0.0)] = 1e-6
    warmup_steps: NonNegInt = 100
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    grad_clip: NonNegFloat = Field(1.0, description="max gradient norm; 0 disables")
    accum_steps: PosInt = 1
    fused: bool | None = Field(None, description="fused AdamW; None = where supported")


class TrainConfig(_Section):
    """Loop, precision, checkpointing and logging."""

    steps: PosInt = 2000
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool | Literal["auto"] = Field(
        False, description="torch.compile the two towers: true, false, or auto (on CUDA once the run is long "
        "enough to repay the warm-up; CPU runs stay eager: softclip/train/compiling.py)"
    )
    log_every: PosInt = 10
    ckpt_every: PosInt = 200
    keep_checkpoints: PosInt = 2
    keep_when_done: PosInt | None = Field(
        None, description="step checkpoints kept once the run has finished (the newest N; best.pt stays); "
        "None: keep_checkpoints. 1 halves an ablation's disk: a finished run resumes from nothing older"
    )
    eval_every: NonNegInt = Field(0, description="periodic evaluation every N steps; 0 = only at the end")
    nan_policy: Literal["stop", "skip"] = "stop"
    max_skipped_steps: NonNegInt = 10
    logit_scale_max: Annotated[float, Field(gt=0.0)] = 100.0
    threads: NonNegInt = Field(0, description="torch CPU threads; 0 = torch default (the run records the count)")
    host_memory: Literal["retain", "system"] = Field(
        "retain", description="retain: keep freed host memory in the process heap, so every step does not fault "
        "its large tensors in again (glibc; numbers unchanged: softclip/train/hostmem.py); system: libc defaults"
    )
    tensorboard: bool = False
    best_metric: str | None = Field(
        None, description="evaluation metric that selects checkpoints/best.pt; None: the first one returned"
    )
    best_mode: Literal["max", "min"] = Field("max", description="whether a larger best_metric is better")


class EvalConfig(_Section):
    """Evaluation suite run at the end of training (and by ``softclip eval``)."""

    suite: str = "eval/synthetic.yaml"
    periodic_suite: str | None = Field(
        None, description="suite run every train.eval_every steps (all its benchmarks), e.g. a light subset "
        "of eval.suite (eval/paper_periodic.yaml); None: eval.suite's zeroshot and retrieval benchmarks",
    )
    batch_size: PosInt = 256
    cache: bool = True


class LauncherConfig(_Section):
    """Where jobs run (ablations and sweeps)."""

    name: str = Field("inprocess", description="inprocess | processes | slurm | submitit-local")
    cluster: str | None = Field(None, description="cluster YAML (partition, account, GPUs, time, ...)")
    workers: PosInt = Field(1, description="jobs (trials, ablation runs) in flight at once")
    cpus_per_job: PosInt = Field(1, description="CPU threads per job (OMP/MKL/torch threads are set to this)")
    cpu_budget: PosInt | None = Field(
        None, description="CPUs the local launchers may use in all (None: every CPU of this machine)"
    )


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
    gpus_per_node: NonNegInt = Field(0, description="GPUs per node (0: CPU jobs)")
    cpus_per_task: PosInt | None = Field(None, description="CPUs per task (None: launcher.cpus_per_job)")
    mem_gb: Annotated[float, Field(gt=0)] | None = Field(None, description="memory per node in GB")
    timeout_min: PosInt = Field(60, description="wall time per job; jobs are requeued on timeout")
    max_num_timeout: NonNegInt = Field(3, description="requeues allowed after timeouts")
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


def _mem(mem_gb: float) -> str:
    """sbatch --mem text: whole GB as ``8GB``, fractions in MB."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def overrides_of(section: type[BaseModel]) -> type[BaseModel]:
    """A model with ``section``'s fields (same constraints), each optional: None keeps the overridden value."""
    fields: dict[str, Any] = {}
    for name, info in section.model_fields.items():
        kind = info.annotation | None  # type: ignore[operator]
        if info.metadata:
            kind = Annotated[(kind, *info.metadata)]
        fields[name] = (kind, Field(None, description=info.description))
    return create_model(f"{section.__name__}Overrides", __config__=ConfigDict(extra="forbid"), **fields)


#: a sweep's or an ablation's ``launcher:`` section: overrides of its base config's ``launcher``
LauncherOverrides = overrides_of(LauncherConfig)


class Config(_Section):
    """A full run configuration (what ``softclip train`` consumes)."""

    name: str = Field("run", description="run folder name under output_dir")
    seed: NonNegInt = 0
    profile: str | None = Field(None, description="set by --profile; recorded for provenance")
    output_dir: str = "runs"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    roi: RoiConfig = Field(default_factory=RoiConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)

    @model_validator(mode="after")
    def _oracle_needs_scenes(self) -> Config:
        if self.loss.target == "oracle" and self.data.source not in SCENE_SOURCES:
            raise ValueError(
                f"loss.target=oracle needs scene annotations (each sample's objects and caption mentions, which "
                f"SynthScenes shards carry in their .json); data.source={self.data.source} has none "
                f"(sources with them: {', '.join(SCENE_SOURCES)})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Short stable hash of the resolved config (provenance in result files)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
