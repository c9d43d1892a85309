"""Causal attention for packed sequences: the XLA reference and the fused kernels, chosen by config.

``xla``: a plain einsum/softmax reference that runs everywhere (CPU tests, TPU). Scores are
computed in float32 and the mask is built from segment ids and positions, so a packed row
gives exactly the result of running each of its sequences alone. Self-attention runs it
blockwise over query blocks of ``Q_BLOCK`` (``blockwise_attention``), each block rematerialised:
the forward holds one block's float32 [B, K, G, Tq, S] scores at a time and the backward keeps
only q, k, v (not every layer's T x T scores and probabilities), which is what bounded training
memory; every block's softmax still spans all keys, so the result is the reference's exactly.

``cudnn``: ``jax.nn.dot_product_attention(implementation="cudnn")`` on NVIDIA GPUs (bf16/fp16
only). Unpacked batches get the fused causal kernel (``is_causal=True``, measured on H100 at seq
4096: 0.69 ms forward), with a sliding window as cuDNN's own ``local_window_size`` (index-based, as the causal flag: an
unpacked row's positions are 0..T-1). Packed batches
get an explicit boolean [B, 1, T, S] mask: correct, ~6x faster than XLA with the same mask
(12.8 ms), but ~3x the causal kernel (2.2 ms). The same calls with ``implementation="xla"`` are
what the CPU tests run to check the wiring.

``pallas_gpu`` and ``splash`` (attention_pallas.py) take segment ids natively, so packed training
batches reach a fused kernel. Why these (checked in JAX 0.10.2, and in JAX's main branch of
2026-08, the newest source at hand):
  * ``jax.nn.dot_product_attention`` exposes only ``query_seq_lengths``/``key_value_seq_lengths``
    (one padded sequence per row) and ``local_window_size``; no segment ids. cuDNN's packed
    (THD) layout exists only in the private ``jax._src.cudnn.fused_attention_stablehlo``
    (``q_offsets``/``kv_offsets`` with a static maximum of segments per row): a private API that
    no CPU test can run, so not used.
  * Tokamax (PyPI, 0.0.x) wraps the same ``dot_product_attention`` signature (mask or lengths, no
    segment ids) and its current releases need Python >= 3.12: not used.
  * ``jax.experimental.pallas.ops.gpu.attention.mha`` (Triton flash attention) takes segment ids
    and a causal flag, forward and backward, and runs on CPU in Pallas interpret mode, so it is
    tested here against the reference. No sliding window; GQA by repeating kv heads. This is
    ``pallas_gpu``. Its speed against cuDNN-with-mask on an H100 is NOT measured yet (no GPU was
    lent): ``benchmarks/attention_parity.py`` times both (forward + backward) so ``auto``'s
    choice can be checked; flip it in attention_auto.py if cuDNN-with-mask wins.
  * TPU: ``jax.experimental.pallas.ops.tpu.splash_attention`` (segment ids, causal or local
    mask, GQA), tested on CPU in interpret mode. This is ``splash``. Untested on a TPU.
``auto`` (attention_auto.py) picks per call from platform, dtype, packing, window and length;
on CPU it is always the blockwise XLA path.

Decoding with a KV cache (``cached_attention``) always uses the XLA reference: queries are few
(one per row per step) and the mask spans cache slots rather than the new block, a shape the
cuDNN path has not been verified on.

Mask semantics: key j is visible to query i iff they share a segment id, ``pos_j <= pos_i``
and, with a sliding window W, ``pos_i - pos_j < W`` (transformers' ``kv_idx > q_idx - W``).
Padding (segment 0) attends only to padding, so no row is fully masked and nothing is NaN.

Shared prefixes (``SharedPrefix``, used by the scoring pass): a segment may also see the first
``length`` positions of another segment of its row, so sequences that begin with the same
tokens (a trajectory and its counterfactual variants) hold that prefix once: each variant is a
segment of only its differing suffix, with positions continuing from the branch point. Key j is
then also visible to query i iff ``seg_j == prefix_segment_i`` and ``pos_j < prefix_length_i``
(and the window holds); a query with length 0 sees nothing extra. Only the mask paths (``xla``,
``cudnn`` with an explicit mask) express it.
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp

from atlas_jax.model.attention_auto import KERNELS, choose_attention
from atlas_jax.model.attention_pallas import pallas_gpu_attention, splash_attention

log = logging.getLogger(__name__)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SharedPrefix:
    """Per query token: the segment whose first ``lengths`` positions it may also see."""
    segments_BxT: jax.Array  # int32
    lengths_BxT: jax.Array  # int32; 0: nothing beyond its own segment


def attention_mask(q_positions_BxT: jax.Array, kv_positions_BxS: jax.Array,
                   q_segments_BxT: jax.Array | None, kv_segments_BxS: jax.Array | None,
                   sliding_window: int | None, prefix: SharedPrefix | None = None) -> jax.Array:
    """Boolean [B, T, S] visibility mask."""
    q_pos = q_positions_BxT[:, :, None]
    kv_pos = kv_positions_BxS[:, None, :]
    mask = kv_pos <= q_pos
    if sliding_window is not None:
        mask &= (q_pos - kv_pos) < sliding_window
    if q_segments_BxT is not None:
        same = q_segments_BxT[:, :, None] == kv_segments_BxS[:, None, :]
        if prefix is not None:
            same |= ((prefix.segments_BxT[:, :, None] == kv_segments_BxS[:, None, :])
                     & (kv_pos < prefix.lengths_BxT[:, :, None]))
        mask &= same
    return mask


def xla_attention(q_BxTxHxD: jax.Array, k: jax.Array, v: jax.Array, mask_BxTxS: jax.Array,
                  kv_layout: str = "bskd") -> jax.Array:
    """Reference grouped-query attention; returns [B, T, H, D] in the query dtype.

    ``kv_layout`` names the key/value axes: "bskd" ([B, S, K, D], self-attention) or "bksd"
    ([B, K, S, D], the KV cache's layout, read in place without a transpose).
    """
    b, t, h, d = q_BxTxHxD.shape
    kv_heads = k.shape[kv_layout.index("k")]
    q_BxTxKxGxD = q_BxTxHxD.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum(f"btkgd,{kv_layout}->bkgts", q_BxTxKxGxD, k,
                        preferred_element_type=jnp.float32) * (d ** -0.5)
    scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h, d).astype(q_BxTxHxD.dtype)


Q_BLOCK = 512  # queries per block in blockwise_attention


def blockwise_attention(q_BxTxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array,
                        positions_BxT: jax.Array, segment_ids_BxT: jax.Array | None, sliding_window: int | None,
                        q_block: int = Q_BLOCK, prefix: SharedPrefix | None = None) -> jax.Array:
    """``xla_attention`` over query blocks; each block builds its own mask and is recomputed in
    the backward pass (``jax.checkpoint``), so no [B, T, S] or [B, K, G, T, S] tensor is stored."""
    b, t, h, d = q_BxTxHxD.shape
    n = next(n for n in range(1, t + 1) if t % n == 0 and t // n <= q_block)

    @jax.checkpoint
    def block(q_BxCxHxD, q_pos_BxC, q_seg_BxC, q_prefix=None):
        mask_BxCxS = attention_mask(q_pos_BxC, positions_BxT, q_seg_BxC, segment_ids_BxT, sliding_window, q_prefix)
        return xla_attention(q_BxCxHxD, k_BxTxKxD, v_BxTxKxD, mask_BxCxS)

    if n == 1:
        return block(q_BxTxHxD, positions_BxT, segment_ids_BxT, prefix)

    def split(x):  # [B, T, ...] -> [n, B, T/n, ...]
        return jnp.moveaxis(x.reshape(b, n, t // n, *x.shape[2:]), 1, 0)

    segments = split(segment_ids_BxT) if segment_ids_BxT is not None else None
    prefixes = jax.tree.map(split, prefix)
    out_NxBxCxHxD = jax.lax.map(lambda a: block(*a),
                                (split(q_BxTxHxD), split(positions_BxT), segments, prefixes))
    return jnp.moveaxis(out_NxBxCxHxD, 0, 1).reshape(b, t, h, d)


def fused_attention(q_BxTxHxD: jax.Array, k_BxSxKxD: jax.Array, v_BxSxKxD: jax.Array,
                    mask_BxTxS: jax.Array | None, implementation: str,
                    sliding_window: int | None = None) -> jax.Array:
    """``jax.nn.dot_product_attention``; ``mask=None`` means plain causal (unpacked), within
    ``sliding_window`` keys when given (``local_window_size=(W - 1, 0)``: i - W < j <= i)."""
    if mask_BxTxS is None:
        window = None if sliding_window is None else (sliding_window - 1, 0)
        return jax.nn.dot_product_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, is_causal=True,
                                            local_window_size=window, implementation=implementation)
    return jax.nn.dot_product_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask=mask_BxTxS[:, None],
                                        implementation=implementation)


_announced: set = set()


def resolve_attention(implementation: str, q_BxTxHxD: jax.Array, segment_ids_BxT: jax.Array | None,
                      sliding_window: int | None) -> str:
    """The kernel a self-attention call runs: ``implementation``, or ``auto``'s choice (logged
    once per distinct choice, so a run says what it picked)."""
    if implementation != "auto":
        return implementation
    platform = jax.default_backend()
    chosen = choose_attention(platform, packed=segment_ids_BxT is not None, sliding_window=sliding_window,
                              dtype=q_BxTxHxD.dtype, seq_len=q_BxTxHxD.shape[1])
    key = (platform, chosen, segment_ids_BxT is not None, sliding_window, str(q_BxTxHxD.dtype), q_BxTxHxD.shape[1])
    if key not in _announced:
        _announced.add(key)
        log.info("attention auto -> %s (%s, %s, %s, window %s, seq %d)", chosen, platform, q_BxTxHxD.dtype,
                 "packed" if segment_ids_BxT is not None else "unpacked", sliding_window, q_BxTxHxD.shape[1])
    return chosen


def causal_attention(q_BxTxHxD: jax.Array, k_BxTxKxD: jax.Array, v_BxTxKxD: jax.Array, *,
                     positions_BxT: jax.Array, segment_ids_BxT: jax.Array | None,
                     sliding_window: int | None, implementation: str,
                     prefix: SharedPrefix | None = None) -> jax.Array:
    """Self-attention over one (possibly packed) block of tokens (``prefix`` needs segment ids)."""
    kernel = resolve_attention(implementation, q_BxTxHxD, segment_ids_BxT, sliding_window)
    if prefix is not None:
        if segment_ids_BxT is None:
            raise ValueError("a shared prefix needs segment ids (it names the segment to share)")
        if kernel in ("splash", "pallas_gpu"):
            kernel = "xla"  # the Pallas kernels take segment ids only: a shared prefix needs the mask path
    if kernel == "xla":
        return blockwise_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, positions_BxT, segment_ids_BxT, sliding_window,
                                   prefix=prefix)
    if kernel == "cudnn":
        mask = None if segment_ids_BxT is None else attention_mask(
            positions_BxT, positions_BxT, segment_ids_BxT, segment_ids_BxT, sliding_window, prefix)
        return fused_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, mask, "cudnn", sliding_window)
    if kernel == "splash":
        return splash_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window)
    if kernel == "pallas_gpu":
        return pallas_gpu_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, sliding_window)
    raise ValueError(f"unknown attention implementation {implementation!r} (expected auto or one of "
                     f"{', '.join(KERNELS)})")


def cached_attention(q_BxTxHxD: jax.Array, k_BxKxSxD: jax.Array, v_BxKxSxD: jax.Array, *,
                     q_positions_BxT: jax.Array, kv_positions_BxS: jax.Array, q_segments_BxT: jax.Array,
                     kv_segments_BxS: jax.Array, sliding_window: int | None) -> jax.Array:
    """New queries against every cache slot (which already holds the new keys/values); the XLA
    reference's math on the cache's [B, K, S, D] layout. Returns [B, T, H, D]."""
    mask_BxTxS = attention_mask(q_positions_BxT, kv_positions_BxS, q_segments_BxT, kv_segments_BxS, sliding_window)
    return xla_attention(q_BxTxHxD, k_BxKxSxD, v_BxKxSxD, mask_BxTxS, kv_layout="bksd")
