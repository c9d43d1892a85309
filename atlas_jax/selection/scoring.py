"""The jitted scoring step: forward pass, per-token NLL and entropy, per-slot segment sums on device.

Logits are computed from the hidden states in chunks of ``chunk`` positions (``jax.lax.map``),
so the float32 [B, T, V] tensor never exists at once (V is 128k for Llama 3). Only three
[B, S] float32 arrays per batch come back to the host.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from atlas_jax.model import CausalLM
from atlas_jax.sharding import batch_sharding

SLOT_SUMS = ("tokens", "nll_sum", "entropy_sum")


def token_nll_entropy(model: CausalLM, hidden_BxTxE: jax.Array, target_ids_BxT: jax.Array,
                      chunk: int) -> tuple[jax.Array, jax.Array]:
    """Float32 [B, T] negative log-likelihood of each target and entropy of each predictive distribution."""
    b, t, e = hidden_BxTxE.shape
    chunk = min(chunk, t)
    if t % chunk:
        raise ValueError(f"row length {t} is not a multiple of the logits chunk {chunk}")
    n = t // chunk
    hidden_NxBxCxE = hidden_BxTxE.reshape(b, n, chunk, e).swapaxes(0, 1)
    targets_NxBxC = target_ids_BxT.reshape(b, n, chunk).swapaxes(0, 1)

    def one_chunk(args):
        hidden_BxCxE, targets_BxC = args
        logp_BxCxV = jax.nn.log_softmax(model.logits(hidden_BxCxE), axis=-1)
        nll_BxC = -jnp.take_along_axis(logp_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
        entropy_BxC = -jnp.sum(jnp.exp(logp_BxCxV) * logp_BxCxV, axis=-1)
        return nll_BxC, entropy_BxC

    nll_NxBxC, entropy_NxBxC = jax.lax.map(one_chunk, (hidden_NxBxCxE, targets_NxBxC))
    return nll_NxBxC.swapaxes(0, 1).reshape(b, t), entropy_NxBxC.swapaxes(0, 1).reshape(b, t)


def slot_sums(values_BxT: jax.Array, slot_ids_BxT: jax.Array, num_slots: int) -> jax.Array:
    """[B, S] sums of ``values`` over the positions of each slot (slot 0 collects the unscored rest)."""
    b = values_BxT.shape[0]
    segments_BxT = slot_ids_BxT + num_slots * jnp.arange(b, dtype=slot_ids_BxT.dtype)[:, None]
    sums = jax.ops.segment_sum(values_BxT.reshape(-1), segments_BxT.reshape(-1), num_segments=b * num_slots)
    return sums.reshape(b, num_slots)


def make_score_step(model: CausalLM, num_slots: int, chunk: int = 256,
                    mesh: Mesh | None = None) -> Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]:
    """``step(batch) -> {"tokens", "nll_sum", "entropy_sum"}`` ([B, S] float32 on device).

    ``batch`` holds the [B, T] int32 arrays of atlas_jax.selection.packing.ROW_KEYS; with a mesh they
    are placed batch-sharded over data x fsdp (the model should be placed on the same mesh).
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, input_ids_BxT, target_ids_BxT, positions_BxT, segment_ids_BxT, slot_ids_BxT):
        lm = nnx.merge(graphdef, state)
        hidden_BxTxE = lm.hidden_states(input_ids_BxT, positions_BxT, segment_ids_BxT)
        nll_BxT, entropy_BxT = token_nll_entropy(lm, hidden_BxTxE, target_ids_BxT, chunk)
        scored_BxT = (slot_ids_BxT > 0).astype(jnp.float32)
        return {"tokens": slot_sums(scored_BxT, slot_ids_BxT, num_slots),
                "nll_sum": slot_sums(nll_BxT * scored_BxT, slot_ids_BxT, num_slots),
                "entropy_sum": slot_sums(entropy_BxT * scored_BxT, slot_ids_BxT, num_slots)}

    sharding = None if mesh is None else batch_sharding(mesh)

    def run(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        arrays = [batch[k] for k in ("input_ids", "target_ids", "positions", "segment_ids", "slot_ids")]
        if sharding is not None:
            arrays = [jax.device_put(a, sharding) for a in arrays]
        return step(state, *arrays)

    return run
