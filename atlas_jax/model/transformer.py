"""The causal LM: embedding, a stack of decoder layers, final norm, LM head.

Layer parameters are always stored stacked along a leading ``layers`` axis, whatever the
run-time options, so checkpoints do not depend on ``scan_layers`` or ``remat``. With
``scan_layers`` the stack is applied with ``jax.lax.scan`` (one compiled layer, fast
compiles for deep models); without it, with an unrolled Python loop over slices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from atlas_jax.model.config import ModelConfig
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
                 segment_ids_BxT: jax.Array | None = None) -> jax.Array:
        """Float32 logits [B, T, V]. For training losses use ``hidden_states`` + ``logits`` on
        chunks instead, so the full float32 [B, T, V] tensor never exists."""
        return self.logits(self.hidden_states(input_ids_BxT, positions_BxT, segment_ids_BxT))

    def hidden_states(self, input_ids_BxT: jax.Array, positions_BxT: jax.Array | None = None,
                      segment_ids_BxT: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states [B, T, E] in the compute dtype.

        ``segment_ids_BxT`` (1.. per packed sequence, 0 for padding) and ``positions_BxT``
        (restarting at 0 per sequence) describe packed rows; both None means one sequence a row.
        """
        cfg = self.cfg
        with use_mesh(self.mesh):
            if positions_BxT is None:
                positions_BxT = jnp.broadcast_to(jnp.arange(input_ids_BxT.shape[1]), input_ids_BxT.shape)
            embed = self.embed_tokens[...].astype(cfg.dtype)
            x_BxTxE = shard(jnp.take(embed, input_ids_BxT, axis=0), ("act_batch", "act_seq", "act_embed"))
            cos_BxTxD, sin_BxTxD = rope_tables(cfg, positions_BxT)
            graphdef, stacked = nnx.split(self.layers)

            def apply_layer(x, layer_state):
                layer = nnx.merge(graphdef, layer_state)
                return layer(x, cos_BxTxD, sin_BxTxD, positions_BxT, segment_ids_BxT)

            if cfg.remat != "none":
                apply_layer = jax.checkpoint(apply_layer, policy=REMAT_POLICIES[cfg.remat],
                                             prevent_cse=not cfg.scan_layers)
            if cfg.scan_layers:
                x_BxTxE, _ = jax.lax.scan(lambda x, s: (apply_layer(x, s), None), x_BxTxE, stacked)
            else:
                for i in range(cfg.num_layers):
                    x_BxTxE = apply_layer(x_BxTxE, jax.tree.map(lambda a: a[i], stacked))
            return self.norm(x_BxTxE)

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
