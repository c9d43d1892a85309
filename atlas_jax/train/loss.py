"""The ATLaS loss, Σ w·CE / Σ w with float per-token weights, and the one cross-entropy
implementation that training and the scoring pass share.

``token_nll`` turns hidden states into per-position float32 NLL (and, for scoring, entropy),
building logits in sequence chunks inside a rematerialised scan: neither the forward nor the
backward pass holds the float32 [batch, positions, vocab] tensor, only [batch, chunk, vocab].

Sparse LM head: under ATLaS most positions carry weight 0, and the head (2·E·V FLOPs per
position forward, twice that backward) is a large share of a step. ``weighted_ce_sums`` with a
``capacity`` gathers, per row, the hidden states of the positions with weight > 0 into a
static [B, capacity] buffer and runs the head only there. A batch with a row holding more
weighted positions than ``capacity`` takes the dense path instead (``lax.cond``), so the
result is always exact; the caller sizes ``capacity`` from the data so that this is rare.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from atlas_jax.model import CausalLM
from atlas_jax.sharding import shard

LM_HEADS = ("sparse", "dense")


def num_chunks(batch: int, seq_len: int, chunk_tokens: int) -> int:
    """Smallest divisor n of seq_len with batch * seq_len / n <= chunk_tokens."""
    for n in range(1, seq_len + 1):
        if seq_len % n == 0 and batch * (seq_len // n) <= chunk_tokens:
            return n
    return seq_len


def token_nll(model: CausalLM, hidden_BxPxE: jax.Array, targets_BxP: jax.Array, chunk_tokens: int,
              entropy: bool = False):
    """Float32 [B, P] NLL of each target (and with ``entropy`` the [B, P] entropy of each
    predictive distribution: returns ``(nll, entropy)``)."""
    b, p, _ = hidden_BxPxE.shape
    n = num_chunks(b, p, chunk_tokens)

    def split(x_BxP):  # [B, P, ...] -> [n, B, P/n, ...]
        return jnp.moveaxis(x_BxP.reshape(b, n, p // n, *x_BxP.shape[2:]), 1, 0)

    def merge(x_NxBxC):
        return jnp.moveaxis(x_NxBxC, 0, 1).reshape(b, p)

    @jax.checkpoint  # recompute each chunk's logits in the backward pass instead of storing them
    def chunk_stats(hidden_BxCxE, targets_BxC):
        logits_BxCxV = model.logits(shard(hidden_BxCxE, ("act_batch", "act_seq", "act_embed")))
        lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
        nll_BxC = lse_BxC - jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
        if not entropy:
            return nll_BxC, None
        logp_BxCxV = logits_BxCxV - lse_BxC[..., None]
        return nll_BxC, -jnp.sum(jnp.exp(logp_BxCxV) * logp_BxCxV, axis=-1)

    _, (nll_NxBxC, ent_NxBxC) = jax.lax.scan(lambda c, x: (c, chunk_stats(*x)), None,
                                             (split(hidden_BxPxE), split(targets_BxP)))
    return (merge(nll_NxBxC), merge(ent_NxBxC)) if entropy else merge(nll_NxBxC)


def gather_rows(selected_BxT: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array]:
    """Per row, the indices of the first ``capacity`` selected positions ([B, C] int32, in order,
    0-filled) and which buffer entries are real ([B, C] bool)."""
    idx_BxC = jax.vmap(lambda s: jnp.nonzero(s, size=capacity, fill_value=0)[0])(selected_BxT).astype(jnp.int32)
    count_B = jnp.sum(selected_BxT, axis=1)
    return idx_BxC, jnp.arange(capacity)[None, :] < count_B[:, None]


def take_rows(x_BxT: jax.Array, idx_BxC: jax.Array) -> jax.Array:
    """``x[b, idx[b, c]]`` for [B, T] or [B, T, E] arrays (stays on the batch's shards)."""
    if x_BxT.ndim == 2:
        return jnp.take_along_axis(x_BxT, idx_BxC, axis=1)
    return jnp.take_along_axis(x_BxT, idx_BxC[..., None], axis=1)


def head_fits(weights_BxT: jax.Array, capacity: int | None) -> jax.Array:
    """True when every row has at most ``capacity`` weighted positions (the sparse head is used)."""
    if capacity is None:
        return jnp.asarray(False)
    return jnp.max(jnp.sum(weights_BxT > 0, axis=1)) <= capacity


def weighted_ce_sums(model: CausalLM, batch: dict, chunk_tokens: int,
                     capacity: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(Σ w·CE, Σ w) over the batch, float32 scalars; divide them for the loss.

    ``capacity``: weighted positions per row the sparse head holds (None: dense head).
    Returning sums rather than the mean lets gradient accumulation and multi-host batches
    normalise once by the global weight total.
    """
    hidden_BxTxE = model.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"])
    weights_BxT = batch["loss_weights"].astype(jnp.float32)
    targets_BxT = batch["target_ids"]
    t = weights_BxT.shape[1]

    def dense():
        return jnp.sum(weights_BxT * token_nll(model, hidden_BxTxE, targets_BxT, chunk_tokens))

    if capacity is None or capacity >= t:
        return dense(), jnp.sum(weights_BxT)

    def sparse():
        idx_BxC, real_BxC = gather_rows(weights_BxT > 0, capacity)
        hidden_BxCxE = shard(take_rows(hidden_BxTxE, idx_BxC), ("act_batch", "act_seq", "act_embed"))
        weights_BxC = jnp.where(real_BxC, take_rows(weights_BxT, idx_BxC), 0.0)
        return jnp.sum(weights_BxC * token_nll(model, hidden_BxCxE, take_rows(targets_BxT, idx_BxC), chunk_tokens))

    return jax.lax.cond(head_fits(weights_BxT, capacity), sparse, dense), jnp.sum(weights_BxT)


def head_capacity(max_row_weighted: int, seq_len: int, margin: float = 1.25, multiple: int = 64) -> int | None:
    """Sparse-head buffer size from the data: the most weighted positions seen in one row, plus a
    margin for batches not profiled, rounded up; None (dense) when it would not save anything."""
    capacity = -(-int(max_row_weighted * margin) // multiple) * multiple
    capacity = max(capacity, multiple)
    return None if capacity >= seq_len else capacity


def dense_weighted_ce(logits_BxTxV: jax.Array, target_ids_BxT: jax.Array, weights_BxT: jax.Array) -> jax.Array:
    """Reference: the same loss from full logits (tests, small evals)."""
    logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, target_ids_BxT[..., None], axis=-1)[..., 0]
    w = weights_BxT.astype(jnp.float32)
    return jnp.sum(w * ce) / jnp.sum(w)
