"""Tiny random Hugging Face models of each family, built once per session with transformers
(PyTorch) and saved as safetensors: the independent reference for the JAX model."""
from __future__ import annotations

import functools

import numpy as np
import pytest

VOCAB = 256

HF_CONFIGS = {
    # Llama 3.2 style: GQA, llama3 rope scaling (original context 64 so it matters at short
    # positions), tied embeddings
    "llama": dict(model_type="llama", vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 64},
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
    # Mistral: explicit head_dim != hidden / heads, a sliding window shorter than the test sequences
    "mistral": dict(model_type="mistral", vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=5,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=False),
    # Qwen2.5: q/k/v biases
    "qwen2": dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                  tie_word_embeddings=False),
}


def build_hf_model(family: str, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(HF_CONFIGS[family])
    config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # random biases and norm scales too, so every tensor is exercised
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory) -> dict:
    """family -> directory of a saved tiny HF model (single safetensors file)."""
    dirs = {}
    for family in HF_CONFIGS:
        path = tmp_path_factory.mktemp(f"hf_{family}")
        build_hf_model(family).save_pretrained(path)
        dirs[family] = path
    return dirs


@pytest.fixture(scope="session")
def token_ids() -> np.ndarray:
    return np.random.RandomState(0).randint(0, VOCAB, size=(2, 12)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def torch_model(hf_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager", dtype=torch.float32).eval()


def torch_logits(hf_dir, ids: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch_model(str(hf_dir))(torch.tensor(ids, dtype=torch.long)).logits.numpy()
