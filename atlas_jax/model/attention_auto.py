"""``model.attention=auto``: which attention kernel a platform and batch get (one decision function).

Kernels (see attention.py for what each supports and why it was chosen):
  xla         blockwise reference (plain JAX): every platform, every mask; the CPU choice.
  cudnn       jax.nn.dot_product_attention(implementation="cudnn"): NVIDIA, bfloat16/float16 only;
              fused causal (+ sliding window) kernel for unpacked batches, explicit mask when packed.
  pallas_gpu  jax.experimental.pallas.ops.gpu.attention (Triton flash attention): takes segment ids
              natively; causal only (no sliding window); sequence length a multiple of 128.
  splash      jax.experimental.pallas.ops.tpu.splash_attention: TPU, segment ids natively,
              causal or causal sliding window, GQA; sequence length a multiple of 128.

The decision is made while tracing (shapes and dtypes are static), per attention call.
"""
from __future__ import annotations

import jax.numpy as jnp

from atlas_jax.model.config import ATTENTION_IMPLS

KERNELS = tuple(k for k in ATTENTION_IMPLS if k != "auto")
BLOCK_MULTIPLE = 128  # the Pallas kernels' tile: sequence lengths they take on hardware


def choose_attention(platform: str, *, packed: bool, sliding_window: int | None, dtype, seq_len: int) -> str:
    """The kernel ``auto`` runs for one self-attention call on ``platform`` (jax.default_backend())."""
    tiles = seq_len % BLOCK_MULTIPLE == 0
    if platform == "tpu":
        return "splash" if tiles else "xla"
    if platform == "gpu":  # NVIDIA: cuDNN and the Triton kernel
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        if not packed and half:
            return "cudnn"  # the fused causal kernel (with its own sliding window): the fastest measured
        if sliding_window is None and tiles:
            return "pallas_gpu"  # segment ids in the kernel instead of a [B, 1, T, T] mask
        return "cudnn" if half else "xla"  # packed + window: cuDNN with the explicit mask
    return "xla"  # CPU and anything else: the blockwise reference
