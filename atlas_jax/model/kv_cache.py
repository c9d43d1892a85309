"""Key/value cache for incremental decoding, used by the same layers as training.

Layout (one array per kind for the whole stack, so ``lax.scan`` over layers carries it):

  ``k_LxBxKxSxD``, ``v_LxBxKxSxD``  keys/values of every layer, compute dtype; heads before
                                     slots, the layout the attention einsums read without a
                                     transpose (a [.., S, K, D] cache was re-laid-out every step)
  ``positions_BxS``                  the RoPE position of the token in each slot
  ``segments_BxS``                   1 where a slot holds a real token, 0 for padding or an empty slot
  ``index``                          int32 scalar: the next slot to write (same for every row)

A call with ``T`` new tokens writes slots ``[index, index + T)`` for every row and attends over
all ``S`` slots with the usual mask (same segment, ``pos_kv <= pos_q``, sliding window), so
left-padded prompts and rows of different lengths need nothing special: padding has segment 0
and is invisible to real tokens; empty slots are segment 0 too.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from atlas_jax.model.config import ModelConfig
from atlas_jax.sharding import shard

CACHE_AXES = ("layers", "act_batch", "act_kv_heads", "act_cache_seq", "act_head_dim")
SLOT_AXES = ("act_batch", "act_cache_seq")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k_LxBxKxSxD: jax.Array
    v_LxBxKxSxD: jax.Array
    positions_BxS: jax.Array
    segments_BxS: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        return self.positions_BxS.shape[1]

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int) -> "KVCache":
        """An empty cache (call inside ``jit`` under the model's mesh to create it sharded)."""
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        zeros = shard(jnp.zeros(shape, cfg.dtype), CACHE_AXES)
        slots = shard(jnp.zeros((batch, max_len), jnp.int32), SLOT_AXES)
        return cls(zeros, zeros, slots, slots, jnp.zeros((), jnp.int32))

    def write_slots(self, positions_BxT: jax.Array, segments_BxT: jax.Array) -> "KVCache":
        """Record positions/validity of the ``T`` tokens about to be written at ``index``."""
        start = (0, self.index)
        positions = jax.lax.dynamic_update_slice(self.positions_BxS, positions_BxT.astype(jnp.int32), start)
        segments = jax.lax.dynamic_update_slice(self.segments_BxS, segments_BxT.astype(jnp.int32), start)
        return dataclasses.replace(self, positions_BxS=shard(positions, SLOT_AXES),
                                   segments_BxS=shard(segments, SLOT_AXES))


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """Layer ``layer``'s view of the cache, as handed to ``Attention``. It holds the whole
    stacked arrays: writing the new keys/values straight into them (rather than into a
    per-layer slice that is then stacked back) lets XLA update the decode loop's buffers in
    place instead of copying each layer's cache every step."""

    k_LxBxKxSxD: jax.Array
    v_LxBxKxSxD: jax.Array
    positions_BxS: jax.Array
    segments_BxS: jax.Array
    index: jax.Array
    layer: int | jax.Array  # a Python int when layers are unrolled, traced under lax.scan

    def update(self, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The stacked caches with this layer's new keys/values written at ``index``."""
        start = (self.layer, 0, 0, self.index, 0)
        dtype = self.k_LxBxKxSxD.dtype
        k = jax.lax.dynamic_update_slice(self.k_LxBxKxSxD, k_BxTxKxD.transpose(0, 2, 1, 3)[None].astype(dtype), start)
        v = jax.lax.dynamic_update_slice(self.v_LxBxKxSxD, v_BxTxKxD.transpose(0, 2, 1, 3)[None].astype(dtype), start)
        return shard(k, CACHE_AXES), shard(v, CACHE_AXES)

    def layer_slice(self, stacked_LxBxKxSxD: jax.Array) -> jax.Array:
        return jax.lax.dynamic_index_in_dim(stacked_LxBxKxSxD, self.layer, axis=0, keepdims=False)
