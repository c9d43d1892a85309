"""The ATLaS loss: Σ w·CE / Σ w with float per-token weights from the data pipeline.

Logits are produced in sequence chunks inside a rematerialised scan, so neither the forward
nor the backward pass holds the float32 [batch, seq, vocab] tensor: peak logits memory is
[batch, chunk, vocab]. Positions with weight 0 contribute exactly nothing (their CE is
multiplied by 0 and their targets are never used to select anything else).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atlas_jax.model import CausalLM
from atlas_jax.sharding import shard


def num_chunks(batch: int, seq_len: int, chunk_tokens: int) -> int:
    """Smallest divisor n of seq_len with batch * seq_len / n <= chunk_tokens."""
    for n in range(1, seq_len + 1):
        if seq_len % n == 0 and batch * (seq_len // n) <= chunk_tokens:
            return n
    return seq_len


def weighted_ce_sums(model: CausalLM, batch: dict, chunk_tokens: int) -> tuple[jax.Array, jax.Array]:
    """(Σ w·CE, Σ w) over the batch, float32 scalars; divide them for the loss.

    Returning sums rather than the mean lets gradient accumulation and multi-host batches
    normalise once by the global weight total.
    """
    hidden_BxTxE = model.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"])
    b, t, e = hidden_BxTxE.shape
    n = num_chunks(b, t, chunk_tokens)
    weights_BxT = batch["loss_weights"].astype(jnp.float32)

    def split(x_BxT):  # [B, T, ...] -> [n, B, T/n, ...]
        return jnp.moveaxis(x_BxT.reshape(b, n, t // n, *x_BxT.shape[2:]), 1, 0)

    @jax.checkpoint  # recompute each chunk's logits in the backward pass instead of storing them
    def chunk_sum(hidden_BxCxE, targets_BxC, weights_BxC):
        with_mesh_axes = shard(hidden_BxCxE, ("act_batch", "act_seq", "act_embed"))
        logits_BxCxV = model.logits(with_mesh_axes)
        lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
        target_logit_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
        return jnp.sum(weights_BxC * (lse_BxC - target_logit_BxC))

    def body(total, chunk):
        return total + chunk_sum(*chunk), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                            (split(hidden_BxTxE), split(batch["target_ids"]), split(weights_BxT)))
    return total, jnp.sum(weights_BxT)


def dense_weighted_ce(logits_BxTxV: jax.Array, target_ids_BxT: jax.Array, weights_BxT: jax.Array) -> jax.Array:
    """Reference: the same loss from full logits (tests, small evals)."""
    logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, target_ids_BxT[..., None], axis=-1)[..., 0]
    w = weights_BxT.astype(jnp.float32)
    return jnp.sum(w * ce) / jnp.sum(w)
