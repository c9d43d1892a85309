"""Pallas attention kernels that take segment ids natively: splash (TPU) and Triton flash (GPU).

Both come with JAX itself (``jax.experimental.pallas.ops``), so they add no dependency. Neither
builds a [B, T, S] mask: a packed row's segment ids go into the kernel, which also skips the
tiles above the diagonal.

Precondition (what the packer produces): inside a segment, positions run 0, 1, 2, ... in row
order, so ``pos_i - pos_j == i - j`` and the kernels' index-based causal/window masks equal the
reference's position-based ones. Padding (segment 0) attends to earlier padding only; the
reference lets it see all padding. Padding outputs never reach a real token or the loss.

On a platform other than the kernel's own (CPU tests) the kernel runs in Pallas interpret mode:
exact but slow, for tests only. Under an active mesh of several devices the kernel runs per
shard (``shard_map``): batch as the ``act_batch`` rule says, heads split over ``tensor`` only
when query and key/value heads split the same way (a query head must sit with its kv head).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from atlas_jax.sharding import active_mesh, logical_to_spec

SPLASH_BLOCKS = (512, 256, 128)  # tile sizes tried in order; the first that divides T is used
GPU_BLOCK, GPU_BWD_BLOCK = 128, 32  # the Triton kernel's forward / backward tiles (its defaults)


def _interpret(platform: str) -> bool:
    return jax.default_backend() != platform


@functools.lru_cache(maxsize=None)
def _splash_kernel(num_heads: int, seq_len: int, sliding_window: int | None, block: int, interpret: bool):
    """A splash kernel for [H, T, D] queries; built once per shape (the mask is preprocessed
    on the host, at trace time)."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    shape = (seq_len, seq_len)
    one = (sa.CausalMask(shape) if sliding_window is None
           else sa.LocalMask(shape, window_size=(sliding_window - 1, 0), offset=0))  # i - W < j <= i
    sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                          block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    with jax.ensure_compile_time_eval():  # concrete mask tables, safe to cache across traces
        return sa.make_splash_mha(sa.MultiHeadMask([one] * num_heads), block_sizes=sizes, head_shards=1,
                                  q_seq_shards=1, interpret=interpret)


def _splash_local(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window):
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    b, t, h, d = q_BxTxHxD.shape
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"sliding_window must be positive, got {sliding_window}")
    block = next((blk for blk in SPLASH_BLOCKS if t % blk == 0), None)
    if block is None:  # the kernel's tiles are multiples of 128 lanes, in interpret mode too
        raise ValueError(f"model.attention=splash: sequence length {t} must be a multiple of {SPLASH_BLOCKS[-1]}; "
                         f"pad the batch or use xla")
    kernel = _splash_kernel(h, t, sliding_window, block, _interpret("tpu"))
    # splash takes [heads, T, D] per example (GQA: K key/value heads, H a multiple) and no scale
    q_BxHxTxD = jnp.swapaxes(q_BxTxHxD * jnp.asarray(d ** -0.5, q_BxTxHxD.dtype), 1, 2)
    k_BxKxTxD, v_BxKxTxD = jnp.swapaxes(k_BxTxKxD, 1, 2), jnp.swapaxes(v_BxTxKxD, 1, 2)
    if segment_ids_BxT is None:
        out_BxHxTxD = jax.vmap(kernel)(q_BxHxTxD, k_BxKxTxD, v_BxKxTxD)
    else:
        out_BxHxTxD = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=SegmentIds(q=s, kv=s)))(
            q_BxHxTxD, k_BxKxTxD, v_BxKxTxD, segment_ids_BxT.astype(jnp.int32))
    return jnp.swapaxes(out_BxHxTxD, 1, 2)


def _pallas_gpu_local(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window):
    from jax.experimental.pallas.ops.gpu import attention as triton

    if sliding_window is not None:
        raise ValueError("model.attention=pallas_gpu: the Pallas GPU kernel has no sliding window "
                         "(use cudnn, xla or auto, which picks cudnn for it)")
    b, t, h, d = q_BxTxHxD.shape
    block, bwd = min(GPU_BLOCK, t), min(GPU_BWD_BLOCK, t)
    if t % block or t % bwd:
        raise ValueError(f"model.attention=pallas_gpu: sequence length {t} must be a multiple of {block} "
                         f"(the kernel's tile); pad the batch or use xla/cudnn")
    groups = h // k_BxTxKxD.shape[2]
    # the kernel pairs query head i with kv head i: repeat kv heads (the gradient sums the copies)
    k_BxTxHxD, v_BxTxHxD = (jnp.repeat(x, groups, axis=2) for x in (k_BxTxKxD, v_BxTxKxD))
    sizes = triton.BlockSizes(block_q=block, block_k=block, block_q_dkv=bwd, block_kv_dkv=bwd,
                              block_q_dq=bwd, block_kv_dq=bwd)
    segments = None if segment_ids_BxT is None else segment_ids_BxT.astype(jnp.int32)
    return triton.mha(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, segments, sm_scale=d ** -0.5, causal=True,
                      block_sizes=sizes, interpret=_interpret("gpu"))


def _on_shards(local, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window):
    """``local`` on each device's block under the active mesh (a Pallas call is not partitioned by
    XLA itself); a plain call without one."""
    mesh = active_mesh()
    if mesh is None or mesh.size == 1:
        return local(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window)
    q_spec = logical_to_spec(("act_batch", None, "act_heads", None), q_BxTxHxD.shape, mesh)
    kv_spec = logical_to_spec(("act_batch", None, "act_kv_heads", None), k_BxTxKxD.shape, mesh)
    heads = q_spec[2] if q_spec[2] == kv_spec[2] else None
    q_spec, kv_spec = PartitionSpec(q_spec[0], None, heads, None), PartitionSpec(q_spec[0], None, heads, None)
    if segment_ids_BxT is None:
        fn = lambda q, k, v: local(q, k, v, None, sliding_window)  # noqa: E731
        args, specs = (q_BxTxHxD, k_BxTxKxD, v_BxTxKxD), (q_spec, kv_spec, kv_spec)
    else:
        fn = lambda q, k, v, s: local(q, k, v, s, sliding_window)  # noqa: E731
        args = (q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT)
        specs = (q_spec, kv_spec, kv_spec, PartitionSpec(q_spec[0], None))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=q_spec, check_vma=False)(*args)


def splash_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window):
    """TPU splash attention, causal (optionally within a sliding window), segment ids, GQA."""
    return _on_shards(_splash_local, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window)


def pallas_gpu_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window):
    """GPU (Triton) flash attention, causal, segment ids, GQA by repeated kv heads."""
    return _on_shards(_pallas_gpu_local, q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window)
