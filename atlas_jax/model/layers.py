"""Building blocks of the decoder: projections, RMSNorm, attention, gated MLP, one layer.

Every parameter is an ``nnx.Param`` whose ``logical_axes`` metadata names its dimensions;
``atlas_jax.sharding.RULES`` maps those names to mesh axes. Parameters are stored in
``param_dtype`` (float32) and cast to the compute ``dtype`` where they are used.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from atlas_jax.model.attention import SharedPrefix, cached_attention, causal_attention
from atlas_jax.model.config import ModelConfig
from atlas_jax.model.kv_cache import LayerCache
from atlas_jax.model.rope import apply_rope
from atlas_jax.sharding import shard


def make_param(rngs: nnx.Rngs, init, shape: Sequence[int], axes: Sequence[str], dtype) -> nnx.Param:
    if len(shape) != len(axes):
        raise ValueError(f"parameter of shape {tuple(shape)} given {len(axes)} logical axes {tuple(axes)}")
    return nnx.Param(init(rngs.params(), tuple(shape), jnp.dtype(dtype)), logical_axes=tuple(axes))


class Dense(nnx.Module):
    """y = x · W (+ b), contracting the trailing ``len(in_shape)`` dims of x."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], in_axes: Sequence[str],
                 out_axes: Sequence[str], *, bias: bool, cfg: ModelConfig, rngs: nnx.Rngs):
        self.num_in = len(in_shape)
        self.dtype = cfg.dtype
        init = jax.nn.initializers.normal(cfg.initializer_range)
        self.kernel = make_param(rngs, init, (*in_shape, *out_shape), (*in_axes, *out_axes), cfg.param_dtype)
        self.bias = (make_param(rngs, jax.nn.initializers.zeros, out_shape, out_axes, cfg.param_dtype)
                     if bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        axes = (tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel, (axes, ((), ())))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """Normalises in float32 and scales in the compute dtype, as transformers' Llama does."""

    def __init__(self, size: int, *, cfg: ModelConfig, rngs: nnx.Rngs):
        self.eps = cfg.rms_norm_eps
        self.dtype = cfg.dtype
        self.scale = make_param(rngs, jax.nn.initializers.ones, (size,), ("norm",), cfg.param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * normed.astype(self.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        e, h, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.cfg = cfg
        self.q_proj = Dense((e,), (h, d), ("embed",), ("q_heads", "head_dim"), bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.k_proj = Dense((e,), (k, d), ("embed",), ("kv_heads", "head_dim"), bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.v_proj = Dense((e,), (k, d), ("embed",), ("kv_heads", "head_dim"), bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.o_proj = Dense((h, d), (e,), ("q_heads", "head_dim"), ("embed",), bias=cfg.o_bias, cfg=cfg, rngs=rngs)

    def __call__(self, x_BxTxE, cos_BxTxD, sin_BxTxD, positions_BxT, segment_ids_BxT,
                 cache: LayerCache | None = None, prefix: SharedPrefix | None = None):
        """Output [B, T, E]; with ``cache``, ``(output, (k_LxBxKxSxD, v_LxBxKxSxD))``: the new keys
        and values are written into the stacked cache at (``cache.layer``, ``cache.index``) and
        the queries attend over all of this layer's slots."""
        heads = ("act_batch", "act_seq", "act_heads", "act_head_dim")
        kv_heads = ("act_batch", "act_seq", "act_kv_heads", "act_head_dim")
        q = shard(apply_rope(self.q_proj(x_BxTxE), cos_BxTxD, sin_BxTxD), heads)
        k = shard(apply_rope(self.k_proj(x_BxTxE), cos_BxTxD, sin_BxTxD), kv_heads)
        v = shard(self.v_proj(x_BxTxE), kv_heads)
        if cache is None:
            out_BxTxHxD = causal_attention(q, k, v, positions_BxT=positions_BxT, segment_ids_BxT=segment_ids_BxT,
                                           sliding_window=self.cfg.sliding_window, implementation=self.cfg.attention,
                                           prefix=prefix)
            return self.o_proj(shard(out_BxTxHxD, heads))
        k_all, v_all = cache.update(k, v)
        out_BxTxHxD = cached_attention(q, cache.layer_slice(k_all), cache.layer_slice(v_all),
                                       q_positions_BxT=positions_BxT, kv_positions_BxS=cache.positions_BxS,
                                       q_segments_BxT=segment_ids_BxT, kv_segments_BxS=cache.segments_BxS,
                                       sliding_window=self.cfg.sliding_window)
        return self.o_proj(shard(out_BxTxHxD, heads)), (k_all, v_all)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = Dense((e,), (f,), ("embed",), ("mlp",), bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)
        self.up_proj = Dense((e,), (f,), ("embed",), ("mlp",), bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)
        self.down_proj = Dense((f,), (e,), ("mlp",), ("embed",), bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)

    def __call__(self, x_BxTxE):
        mlp_axes = ("act_batch", "act_seq", "act_mlp")
        hidden_BxTxF = jax.nn.silu(shard(self.gate_proj(x_BxTxE), mlp_axes)) * shard(self.up_proj(x_BxTxE), mlp_axes)
        return self.down_proj(hidden_BxTxF)


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rngs=rngs)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x_BxTxE, cos_BxTxD, sin_BxTxD, positions_BxT, segment_ids_BxT,
                 cache: LayerCache | None = None, prefix: SharedPrefix | None = None):
        """Output [B, T, E]; with ``cache``, ``(output, updated (k, v))`` as ``Attention`` returns."""
        residual = ("act_batch", "act_seq", "act_embed")
        attn = self.self_attn(self.input_layernorm(x_BxTxE), cos_BxTxD, sin_BxTxD, positions_BxT, segment_ids_BxT,
                              cache, prefix)
        attn_BxTxE, kv = (attn, None) if cache is None else attn
        x_BxTxE = shard(x_BxTxE + attn_BxTxE, residual)
        out_BxTxE = shard(x_BxTxE + self.mlp(self.post_attention_layernorm(x_BxTxE)), residual)
        return out_BxTxE if cache is None else (out_BxTxE, kv)
