"""Model FLOPs per token and accelerator peak FLOP/s, for model FLOPs utilisation (MFU).

Training FLOPs per token = 6 * (matmul parameters) + 6 * layers * heads * head_dim * seq_len:
the first term is the forward + backward of every weight matmul (the LM head included, the
embedding lookup not), the second the causal attention scores and values (half of a full
T x T attention, hence 6 rather than PaLM's 12). Rematerialisation is not counted: MFU
measures useful model work, not hardware work.
"""
from __future__ import annotations

import jax

from atlas_jax.model import ModelConfig

# dense bf16 peak FLOP/s per device (vendor figures, no sparsity)
PEAK_BF16_FLOPS = {
    "H100": 989e12, "H200": 989e12, "H800": 989e12, "GH200": 989e12, "A100": 312e12, "A800": 312e12,
    "L40S": 362e12, "B200": 2250e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}


def matmul_params(cfg: ModelConfig) -> int:
    e, f = cfg.hidden_size, cfg.intermediate_size
    attn = e * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    return cfg.num_layers * (attn + 3 * e * f) + e * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    return 6.0 * matmul_params(cfg) + 6.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak bf16 FLOP/s of one device, or None when unknown (CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for name in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):  # "TPU v5 lite" before "TPU v5"
        if name.lower() in kind.lower():
            return PEAK_BF16_FLOPS[name]
    return None
