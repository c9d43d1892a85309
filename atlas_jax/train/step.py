"""The jitted train and eval steps, with explicit shardings and donated state buffers."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from atlas_jax.data.sequences import BATCH_KEYS
from atlas_jax.model import CausalLM, state_shardings
from atlas_jax.sharding import batch_sharding, shard
from atlas_jax.train.loss import head_fits, weighted_ce_sums


@dataclasses.dataclass
class Steps:
    batch_shardings: dict
    params: Any  # the model's parameters (nnx.State), laid out by their logical-axis shardings
    opt_state: Any  # freshly initialised optimizer state (a resume overwrites it)
    train: Callable  # (params, opt_state, batch, step) -> (params, opt_state, metrics)
    eval_sums: Callable  # (params, batch) -> (Σ w·CE, Σ w)


def split_params(model: CausalLM):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("the model holds non-parameter state, which the trainer does not carry")
    return graphdef, params


def build_steps(model: CausalLM, tx: optax.GradientTransformation, schedule: optax.Schedule, mesh: Mesh,
                grad_accum_steps: int, loss_chunk_tokens: int, head_capacity: int | None = None) -> Steps:
    """``head_capacity``: weighted positions per row the sparse LM head holds (None: dense head;
    see atlas_jax.train.loss). Evaluation always uses the dense head: held-out data weights every step."""
    graphdef, params = split_params(model)
    param_sh = state_shardings(params, mesh)
    batch_sh = {key: batch_sharding(mesh, 2) for key in BATCH_KEYS}
    replicated = NamedSharding(mesh, PartitionSpec())
    # optimizer moments follow their parameters' shardings by propagation through tx.init
    # (scalars such as Adam's step count land on one device: replicate those over the mesh)
    opt_state = jax.jit(tx.init, in_shardings=(param_sh,))(params)
    opt_sh = jax.tree.map(lambda x: x.sharding if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
                          else replicated, opt_state)
    opt_state = jax.device_put(opt_state, opt_sh)

    def sums_and_grads(p, batch):
        def f(p):
            return weighted_ce_sums(nnx.merge(graphdef, p), batch, loss_chunk_tokens, head_capacity)
        (total, weight), grads = jax.value_and_grad(f, has_aux=True)(p)
        return total, weight, grads

    def train(p, opt_state, batch, step):
        if grad_accum_steps == 1:
            total, weight, grads = sums_and_grads(p, batch)
        else:
            rows = batch["input_ids"].shape[0] // grad_accum_steps
            # micro-batch i takes rows i, i+k, i+2k...: every micro-batch stays spread over all devices
            micro = {k: shard(jnp.swapaxes(v.reshape(rows, grad_accum_steps, -1), 0, 1), (None, "act_batch", None))
                     for k, v in batch.items()}
            zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, p))

            def body(acc, mb):
                return jax.tree.map(jnp.add, acc, sums_and_grads(p, mb)), None
            (total, weight, grads), _ = jax.lax.scan(body, zero, micro)
        # Σ w·CE / Σ w over the whole step; a step without weighted tokens has loss and gradient 0
        denom = jnp.where(weight > 0, weight, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        metrics = {"loss": total / denom, "weighted_tokens": weight,
                   "trained_positions": jnp.sum(batch["loss_weights"] > 0),
                   "tokens": jnp.sum(batch["segment_ids"] > 0), "grad_norm": grad_norm,
                   # 1 when the dense head ran (configured, or a row overflowed the sparse head's buffer)
                   "lm_head_dense": jnp.logical_not(head_fits(batch["loss_weights"], head_capacity)).astype(jnp.int32),
                   "lr": schedule(step)}
        return p, opt_state, metrics

    def eval_sums(p, batch):
        return weighted_ce_sums(nnx.merge(graphdef, p), batch, loss_chunk_tokens)

    train_jit = jax.jit(train, in_shardings=(param_sh, opt_sh, batch_sh, replicated),
                        out_shardings=(param_sh, opt_sh, replicated), donate_argnums=(0, 1))
    eval_jit = jax.jit(eval_sums, in_shardings=(param_sh, batch_sh), out_shardings=replicated)
    return Steps(batch_sh, params, opt_state, train_jit, eval_jit)
