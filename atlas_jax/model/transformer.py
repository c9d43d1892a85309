"""The causal LM: embedding, a stack of decoder layers, final norm, LM head.

Layer parameters are always stored stacked along a leading ``layers`` axis, whatever the
run-time options, so checkpoints do not depend on ``scan_layers`` or ``remat``. With
``scan_layers`` the stack is applied with ``jax.lax.scan`` (one compiled layer, fast
compiles for deep models); without it, with an unrolled Python loop over slices.

Decoding passes a :class:`KVCache` through the same layers (``cache=``): each layer reads and
returns its slice of the stacked cache, so training and generation share one code path.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from atlas_jax.model.attention import SharedPrefix
from atlas_jax.model.config import ModelConfig
from atlas_jax.model.kv_cache import KVCache, LayerCache
from atlas_jax.model.layers import DecoderLayer, RMSNorm, make_param
from atlas_jax.model.rope import rope_tables
from atlas_jax.sharding import shard, use_mesh

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    # keep projection/MLP matmul outputs, recompute the cheap elementwise work and attention
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def stack_layers(layers: list[nnx.Module]) -> nnx.Module:
    """One module whose parameters are the layers' parameters stacked on a new axis 0."""
    graphdef, first = nnx.split(layers[0])
    states = [first] + [nnx.split(layer)[1] for layer in layers[1:]]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    for _, variable in nnx.to_flat_state(stacked):
        variable.set_metadata("logical_axes", ("layers",) + tuple(variable.get_metadata()["logical_axes"]))
    return nnx.merge(graphdef, stacked)


class CausalLM(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, mesh: Mesh | None = None):
        self.cfg = cfg
        # static: part of the graph definition, so a jitted forward retraces for another mesh
        self.mesh = mesh
        embed_init = jax.nn.initializers.normal(cfg.initializer_range)
        self.embed_tokens = make_param(rngs, embed_init, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"),
                                       cfg.param_dtype)
        self.layers = stack_layers([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg=cfg, rngs=rngs)
        self.lm_head = None if cfg.tie_word_embeddings else make_param(
            rngs, embed_init, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype)

    def __call__(self, input_ids_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                 segment_ids_BxT: jax.Array | None = None, cache: KVCache | None = None):
        """Float32 logits [B, T, V] (with ``cache``: ``(logits, updated cache)``). For training
        losses use ``hidden_states`` + ``logits`` on chunks instead, so the full float32
        [B, T, V] tensor never exists."""
        out = self.hidden_states(input_ids_BxT, positions_BxT, segment_ids_BxT, cache)
        return self.logits(out) if cache is None else (self.logits(out[0]), out[1])

    def hidden_states(self, input_ids_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                      segment_ids_BxT: jax.Array | None = None, cache: KVCache | None = None,
                      prefix: SharedPrefix | None = None):
        """Final-norm hidden states [B, T, E] in the compute dtype.

        ``segment_ids_BxT`` (1.. per packed sequence, 0 for padding) and ``positions_BxT``
        (restarting at 0 per sequence) describe packed rows; both None means one sequence a row.

        With ``cache`` the tokens continue the cached sequences: ``positions_BxT`` is required,
        ``segment_ids_BxT`` marks real tokens (1) and padding (0, default: all real), and the
        result is ``(hidden, cache)`` with the tokens' keys/values written at ``cache.index``.

        ``prefix`` (packed rows only, not with a cache) lets a segment also see the first positions
        of another segment of its row (atlas_jax.model.attention.SharedPrefix).
        """
        cfg = self.cfg
        if prefix is not None and (cache is not None or segment_ids_BxT is None):
            raise ValueError("CausalLM: a shared prefix needs segment_ids_BxT and no KV cache")
        with use_mesh(self.mesh):
            if cache is not None:
                if positions_BxT is None:
                    raise ValueError("CausalLM with a KV cache needs positions_BxT (each row's token positions)")
                if segment_ids_BxT is None:
                    segment_ids_BxT = jnp.ones(input_ids_BxT.shape, jnp.int32)
                cache = cache.write_slots(positions_BxT, segment_ids_BxT)
            if positions_BxT is None:
                positions_BxT = jnp.broadcast_to(jnp.arange(input_ids_BxT.shape[1]), input_ids_BxT.shape)
            embed = self.embed_tokens[...].astype(cfg.dtype)
            x_BxTxE = shard(jnp.take(embed, input_ids_BxT, axis=0), ("act_batch", "act_seq", "act_embed"))
            cos_BxTxD, sin_BxTxD = rope_tables(cfg, positions_BxT)
            graphdef, stacked = nnx.split(self.layers)

            def apply_layer(x, layer_state, kv=None):
                layer = nnx.merge(graphdef, layer_state)
                if kv is None:
                    return layer(x, cos_BxTxD, sin_BxTxD, positions_BxT, segment_ids_BxT, prefix=prefix)
                k_all, v_all, i = kv
                layer_cache = LayerCache(k_all, v_all, cache.positions_BxS, cache.segments_BxS, cache.index, i)
                return layer(x, cos_BxTxD, sin_BxTxD, positions_BxT, segment_ids_BxT, layer_cache)

            if cfg.remat != "none":
                apply_layer = jax.checkpoint(apply_layer, policy=REMAT_POLICIES[cfg.remat],
                                             prevent_cse=not cfg.scan_layers)
            if cache is None:
                if cfg.scan_layers:
                    x_BxTxE, _ = jax.lax.scan(lambda x, s: (apply_layer(x, s), None), x_BxTxE, stacked)
                else:
                    for i in range(cfg.num_layers):
                        x_BxTxE = apply_layer(x_BxTxE, jax.tree.map(lambda a: a[i], stacked))
                return self.norm(x_BxTxE)
            # the stacked cache is threaded through the layers (a scan carry), each writing its own slice
            k_all, v_all = cache.k_LxBxKxSxD, cache.v_LxBxKxSxD
            if cfg.scan_layers:
                def scan_body(carry, s_i):
                    x, k, v = carry
                    x, (k, v) = apply_layer(x, s_i[0], (k, v, s_i[1]))
                    return (x, k, v), None

                (x_BxTxE, k_all, v_all), _ = jax.lax.scan(scan_body, (x_BxTxE, k_all, v_all),
                                                          (stacked, jnp.arange(cfg.num_layers)))
            else:
                for i in range(cfg.num_layers):
                    x_BxTxE, (k_all, v_all) = apply_layer(x_BxTxE, jax.tree.map(lambda a: a[i], stacked),
                                                          (k_all, v_all, i))
            cache = KVCache(k_all, v_all, cache.positions_BxS, cache.segments_BxS,
                            cache.index + input_ids_BxT.shape[1])
            return self.norm(x_BxTxE), cache

    def logits(self, hidden_BxTxE: jax.Array) -> jax.Array:
        """Float32 logits for hidden states of any leading shape [..., E] -> [..., V]."""
        with use_mesh(self.mesh):
            dtype = self.cfg.dtype
            if self.lm_head is None:
                kernel_ExV = self.embed_tokens[...].astype(dtype).T
            else:
                kernel_ExV = self.lm_head[...].astype(dtype)
            logits = jnp.einsum("...e,ev->...v", hidden_BxTxE.astype(dtype), kernel_ExV,
                                preferred_element_type=jnp.float32)
            if logits.ndim == 3:
                logits = shard(logits, ("act_batch", "act_seq", "act_vocab"))
            return logits
