"""The training run's config: typed sections, loaded from YAML with ``dotted.key=value``
overrides, validated (including against the device count) before anything compiles."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from etils import epath

from atlas_jax.config_loader import ConfigError, build, load_yaml, merge, parse_overrides
from atlas_jax.data.pipeline import DataConfig
from atlas_jax.model.config import ATTENTION_IMPLS, DTYPES, REMAT_POLICIES
from atlas_jax.platform_defaults import default_compute_dtype
from atlas_jax.sharding import MeshConfig
from atlas_jax.train.loss import LM_HEADS

RESUME_MODES = ("auto", "force", "never")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    init_from: str | None = None  # HF directory or atlas-jax checkpoint directory
    config: str | None = None  # a Hugging Face config.json for a randomly initialised model
    # compute dtype; parameters stay float32. Default: float32 on CPU, bfloat16 on GPU/TPU
    dtype: str = dataclasses.field(default_factory=default_compute_dtype)
    attention: str = "auto"  # auto | xla | cudnn | pallas_gpu | splash (auto: blockwise XLA on CPU)
    remat: str = "none"  # none | full | save_dots
    scan_layers: bool = False

    def __post_init__(self):
        if (self.init_from is None) == (self.config is None):
            raise ConfigError("model: set exactly one of model.init_from (pretrained weights) or "
                              "model.config (random init from a config.json)")
        for name, allowed in (("dtype", DTYPES), ("attention", ATTENTION_IMPLS), ("remat", REMAT_POLICIES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def runtime_options(self) -> dict:
        return dict(dtype=self.dtype, attention=self.attention, remat=self.remat, scan_layers=self.scan_layers)


@dataclasses.dataclass(frozen=True)
class OptimSection:
    learning_rate: float = 2e-5
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    warmup_steps: int = 0
    final_lr_ratio: float = 0.0  # learning rate at the last step, relative to the peak
    weight_decay: float = 0.0  # AdamW; never applied to norms and biases
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # global-norm clipping; 0 disables
    grad_accum_steps: int = 1  # micro-batches per step; the loss is still normalised over the whole step

    def __post_init__(self):
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"optim.schedule: expected cosine, linear or constant, got {self.schedule!r}")
        for name in ("learning_rate", "eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"optim.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "weight_decay", "clip_norm", "final_lr_ratio"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if self.grad_accum_steps < 1:
            raise ConfigError(f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")


@dataclasses.dataclass(frozen=True)
class TrainSection:
    steps: int | None = None  # the run's length: exactly one of steps or epochs
    epochs: int | None = None  # sized in epochs: steps = packed batches of that many passes over the data
    seed: int = 0
    log_every: int = 1
    save_every: int = 100  # 0: only at the end (and on SIGTERM)
    keep_checkpoints: int = 3
    async_checkpointing: bool = True
    loss_chunk_tokens: int = 1024  # tokens per logits chunk in the loss: bounds the float32 [*, V] memory
    lm_head: str = "sparse"  # sparse: logits only at weighted positions (exact); dense: at every position
    progress_bar: bool = True
    # an output_dir that holds a checkpoint (atlas_jax/train/run_identity.py): "auto" resumes it when the
    # model, data and optimizer settings match the stored config.json and refuses otherwise, naming the keys;
    # "force" resumes despite such a change (a deliberate one, e.g. a new learning rate) and records it in
    # resume_log.jsonl; "never" refuses any output_dir that already holds a checkpoint
    resume: str = "auto"

    def __post_init__(self):
        if self.resume not in RESUME_MODES:
            raise ConfigError(f"train.resume: expected one of {', '.join(RESUME_MODES)}, got {self.resume!r}")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("train: set exactly one of train.steps or train.epochs (to size a run in epochs "
                              "over a config that sets steps, add train.steps=null)")
        for name in ("steps", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lm_head not in LM_HEADS:
            raise ConfigError(f"train.lm_head: expected one of {', '.join(LM_HEADS)}, got {self.lm_head!r}")
        for name in ("log_every", "keep_checkpoints", "loss_chunk_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ConfigError(f"train.save_every must be >= 0, got {self.save_every}")


@dataclasses.dataclass(frozen=True)
class EvalSection:
    files: Sequence[str] = ()  # held-out trajectory files; empty disables eval
    every: int = 0  # steps between evals (0: only at the end when files are given)
    max_batches: int = 8
    seq_len: int | None = None  # packed row length for eval (default data.seq_len): held-out
    # tasks can have longer prompts than the training ones

    def __post_init__(self):
        if self.every < 0 or self.max_batches < 1:
            raise ConfigError("eval.every must be >= 0 and eval.max_batches >= 1")
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"eval.seq_len must be at least 2, got {self.seq_len}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    output_dir: str
    model: ModelSection
    data: DataConfig
    train: TrainSection
    optim: OptimSection = OptimSection()
    eval: EvalSection = EvalSection()
    mesh: MeshConfig = MeshConfig()

    @property
    def checkpoint_dir(self) -> epath.Path:
        return epath.Path(self.output_dir) / "checkpoints"


def load_run_config(path: str | epath.Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    data = load_yaml(path) if path is not None else {}
    return build(RunConfig, merge(data, parse_overrides(overrides)))


def validate_for_devices(cfg: RunConfig, num_devices: int, num_processes: int) -> tuple[int, int, int]:
    """Checks that need the device count; returns the mesh shape (data, fsdp, tensor)."""
    if cfg.mesh.num_devices != -1:
        if not 1 <= cfg.mesh.num_devices <= num_devices:
            raise ConfigError(f"mesh.num_devices={cfg.mesh.num_devices}: {num_devices} devices are available")
        num_devices = cfg.mesh.num_devices
    try:
        shape = cfg.mesh.shape(num_devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    batch_shards = shape[0] * shape[1]
    rows = cfg.data.global_batch_size
    accum = cfg.optim.grad_accum_steps
    if rows % accum:
        raise ConfigError(f"data.global_batch_size={rows} is not divisible by optim.grad_accum_steps={accum}")
    if (rows // accum) % batch_shards:
        raise ConfigError(f"data.global_batch_size={rows} / optim.grad_accum_steps={accum} = {rows // accum} rows "
                          f"per micro-batch cannot be split over mesh data x fsdp = {batch_shards} devices")
    if rows % num_processes:
        raise ConfigError(f"data.global_batch_size={rows} is not divisible by {num_processes} processes")
    if cfg.train.steps is not None and cfg.optim.warmup_steps > cfg.train.steps:
        raise ConfigError(f"optim.warmup_steps={cfg.optim.warmup_steps} exceeds train.steps={cfg.train.steps}")
    return shape
