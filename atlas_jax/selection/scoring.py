"""The jitted scoring step: forward pass, per-token NLL and entropy, per-slot segment sums on device.

The LM head runs only at scored positions (slot > 0): per row, their hidden states are gathered
into a [B, C] buffer whose capacity C is the batch's most scored positions in a row, rounded up
to a power of two (a handful of compiled shapes), or the whole row when that is no smaller.
Logits come from atlas_jax.train.loss.token_nll, the cross-entropy training uses, in chunks of
``chunk`` positions, so the float32 [B, T, V] tensor never exists at once (V is 128k for
Llama 3). Only three [B, S] float32 arrays per batch come back to the host.

Rows whose variants share their trajectory's prefix (atlas_jax.selection.packing) pass it to the
model as a SharedPrefix; a batch without any runs the plain packed attention.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from atlas_jax.model import CausalLM
from atlas_jax.model.attention import SharedPrefix
from atlas_jax.selection.packing import ROW_KEYS
from atlas_jax.sharding import batch_sharding
from atlas_jax.train.loss import gather_rows, take_rows, token_nll

SLOT_SUMS = ("tokens", "nll_sum", "entropy_sum")


def slot_sums(values_BxT: jax.Array, slot_ids_BxT: jax.Array, num_slots: int) -> jax.Array:
    """[B, S] sums of ``values`` over the positions of each slot (slot 0 collects the unscored rest)."""
    b = values_BxT.shape[0]
    segments_BxT = slot_ids_BxT + num_slots * jnp.arange(b, dtype=slot_ids_BxT.dtype)[:, None]
    sums = jax.ops.segment_sum(values_BxT.reshape(-1), segments_BxT.reshape(-1), num_segments=b * num_slots)
    return sums.reshape(b, num_slots)


def scored_capacity(slot_ids_BxT: np.ndarray, smallest: int = 64) -> int | None:
    """Buffer size for a batch's scored positions: the most in one row, rounded up to a power of
    two (at least ``smallest``); None when that would not be smaller than the row. (Training sizes
    its buffer once, from a profile plus a margin with a dense fallback, train/loss.head_capacity:
    its step compiles one shape and batches come from a device-side pipeline; here each batch is on
    the host before it runs, so it is sized exactly, a few power-of-two shapes in all.)"""
    need = int((np.asarray(slot_ids_BxT) > 0).sum(axis=1).max(initial=0))
    capacity = max(smallest, 1 << max(need - 1, 0).bit_length())
    return None if capacity >= slot_ids_BxT.shape[1] else capacity


def make_score_step(model: CausalLM, num_slots: int, chunk: int = 256,
                    mesh: Mesh | None = None) -> Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]:
    """``step(batch) -> {"tokens", "nll_sum", "entropy_sum"}`` ([B, S] float32 on device).

    ``batch`` holds the [B, T] int32 arrays of atlas_jax.selection.packing.ROW_KEYS; with a mesh they
    are placed batch-sharded over data x fsdp (the model should be placed on the same mesh).
    """
    graphdef, state = nnx.split(model)

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def step(capacity, shared, state, input_ids_BxT, target_ids_BxT, positions_BxT, segment_ids_BxT, slot_ids_BxT,
             prefix_segment_ids_BxT, prefix_lengths_BxT):
        lm = nnx.merge(graphdef, state)
        prefix = SharedPrefix(prefix_segment_ids_BxT, prefix_lengths_BxT) if shared else None
        hidden_BxTxE = lm.hidden_states(input_ids_BxT, positions_BxT, segment_ids_BxT, prefix=prefix)
        if capacity is not None:  # only the scored positions (unscored ones fill the rest with slot 0)
            idx_BxC, real_BxC = gather_rows(slot_ids_BxT > 0, capacity)
            hidden_BxTxE = take_rows(hidden_BxTxE, idx_BxC)
            target_ids_BxT = take_rows(target_ids_BxT, idx_BxC)
            slot_ids_BxT = jnp.where(real_BxC, take_rows(slot_ids_BxT, idx_BxC), 0)
        b, p = target_ids_BxT.shape
        nll_BxT, entropy_BxT = token_nll(lm, hidden_BxTxE, target_ids_BxT, b * min(chunk, p), entropy=True)
        scored_BxT = (slot_ids_BxT > 0).astype(jnp.float32)
        return {"tokens": slot_sums(scored_BxT, slot_ids_BxT, num_slots),
                "nll_sum": slot_sums(nll_BxT * scored_BxT, slot_ids_BxT, num_slots),
                "entropy_sum": slot_sums(entropy_BxT * scored_BxT, slot_ids_BxT, num_slots)}

    sharding = None if mesh is None else batch_sharding(mesh)

    def run(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        arrays = [batch[k] for k in ROW_KEYS]
        if sharding is not None:
            arrays = [jax.device_put(a, sharding) for a in arrays]
        shared = bool(batch["prefix_lengths"].any())  # static: two compiled variants at most
        return step(scored_capacity(batch["slot_ids"]), shared, state, *arrays)

    return run
