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
    if platform == "tpu":
        return "splash" if seq_len % BLOCK_MULTIPLE == 0 else "xla"
    if platform == "gpu":  # NVIDIA: cuDNN and the Triton kernel
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        # Only kernels that have run on a GPU: cuDNN (fused causal 0.69 ms, explicit packing mask 2.2 ms,
        # XLA 12.8 ms; H100, seq 4096). pallas_gpu takes segment ids natively but has only run interpreted
        # on CPU: it stays opt-in (model.attention=pallas_gpu) until benchmarks/gpu_check.sh shows it beats
        # cuDNN's mask path on hardware.
        return "cudnn" if half else "xla"
    return "xla"  # CPU and anything else: the blockwise reference
