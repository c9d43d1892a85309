"""ModelConfig from the real backbones' config.json files (as published, transformers 4.x
style) and back through transformers' own config classes."""
from __future__ import annotations

import pytest
from transformers import AutoConfig

from atlas_jax.model import ModelConfig

LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 128256}
LLAMA32_1B = {**LLAMA31_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "head_dim": 64, "rope_scaling": {**LLAMA31_8B["rope_scaling"], "factor": 32.0},
              "tie_word_embeddings": True}
MISTRAL_7B_V03 = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "vocab_size": 32768}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
    "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 18944,
    "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 152064}


def test_llama31_8b():
    cfg = ModelConfig.from_hf_dict(LLAMA31_8B)
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (32, 32, 8, 128)
    assert (cfg.rope_type, cfg.rope_factor, cfg.rope_original_max_position) == ("llama3", 8.0, 8192)
    assert cfg.eos_token_id == (128001, 128008, 128009)
    assert not cfg.tie_word_embeddings and not cfg.qkv_bias
    assert cfg.num_params() == 8_030_261_248  # the published parameter count of Llama-3.1-8B


def test_llama32_1b_is_tied():
    cfg = ModelConfig.from_hf_dict(LLAMA32_1B)
    assert cfg.tie_word_embeddings and cfg.rope_factor == 32.0
    assert cfg.num_params() == 1_235_814_400  # published count of Llama-3.2-1B


def test_mistral_and_qwen():
    mistral = ModelConfig.from_hf_dict(MISTRAL_7B_V03)
    assert mistral.sliding_window is None and mistral.rope_theta == 1e6 and mistral.rope_type == "default"
    qwen = ModelConfig.from_hf_dict(QWEN25_7B)
    assert qwen.qkv_bias and not qwen.o_bias and qwen.sliding_window is None and qwen.num_kv_heads == 4


@pytest.mark.parametrize("hf", [LLAMA31_8B, LLAMA32_1B, MISTRAL_7B_V03, QWEN25_7B], ids=["l8b", "l1b", "m7b", "q7b"])
def test_to_hf_dict_round_trips_through_transformers(hf):
    cfg = ModelConfig.from_hf_dict(hf)
    generated = cfg.to_hf_dict()
    reparsed = AutoConfig.for_model(**generated).to_dict()
    assert ModelConfig.from_hf_dict(reparsed) == cfg
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_invalid_values_name_the_field():
    with pytest.raises(ValueError, match="num_attention_heads=6 is not a multiple of num_key_value_heads=4"):
        ModelConfig.from_hf_dict({**LLAMA31_8B, "num_attention_heads": 6, "num_key_value_heads": 4})
    with pytest.raises(ValueError, match="missing required key"):
        ModelConfig.from_hf_dict({"model_type": "llama"})
    with pytest.raises(ValueError, match="attention='flash'"):
        ModelConfig.from_hf_dict(LLAMA31_8B, attention="flash")
    with pytest.raises(ValueError, match="Qwen2 per-layer sliding-window"):
        ModelConfig.from_hf_dict({**QWEN25_7B, "use_sliding_window": True})
    with pytest.raises(ValueError, match="unknown model config key"):
        ModelConfig.from_json('{"model_type": "llama", "bogus": 1}')
