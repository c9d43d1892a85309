"""Shared helpers for model tests: a tiny config and a weighted next-token loss with its gradient."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from atlas_jax.model import ModelConfig

TINY = ModelConfig(model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=16, dtype="float32", rope_theta=10000.0)


def random_batch(batch: int = 8, length: int = 16, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    return {"input_ids": rng.randint(0, TINY.vocab_size, (batch, length)).astype(np.int32),
            "target_ids": rng.randint(0, TINY.vocab_size, (batch, length)).astype(np.int32),
            "loss_weights": (rng.rand(batch, length) > 0.5).astype(np.float32)}


def loss_and_grad_fn(model):
    """jit(value_and_grad) of Σ w·CE / Σ w over the model's parameters; returns (fn, params)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, batch):
        m = nnx.merge(graphdef, params, rest)
        logits = m(batch["input_ids"])
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.take_along_axis(logp, batch["target_ids"][..., None], axis=-1)[..., 0]
        w = batch["loss_weights"]
        return jnp.sum(ce * w) / jnp.sum(w), logits

    return jax.jit(jax.value_and_grad(loss, has_aux=True)), params


def to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x), nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree)
