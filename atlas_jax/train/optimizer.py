"""AdamW with warmup + cosine/linear decay, no weight decay on norms and biases, global-norm
clipping. Gradient accumulation is done in the train step (see step.py), not here, so the
loss stays normalised by the weight total of the whole step."""
from __future__ import annotations

import jax
import optax

from atlas_jax.train.config import OptimSection

NO_DECAY = ("scale", "bias")  # RMSNorm scales and projection biases


def learning_rate_schedule(cfg: OptimSection, total_steps: int) -> optax.Schedule:
    peak, final = cfg.learning_rate, cfg.learning_rate * cfg.final_lr_ratio
    warmup = optax.linear_schedule(0.0, peak, cfg.warmup_steps) if cfg.warmup_steps else None
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.final_lr_ratio)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, final, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup is None:
        return decay
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def decay_mask(params):
    """True where weight decay applies: every parameter but norm scales and biases."""
    def keep(path, _):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        return not any(name in NO_DECAY for name in names)
    return jax.tree.map_with_path(keep, params)


def make_optimizer(cfg: OptimSection, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=decay_mask))
    return optax.chain(*parts), schedule
