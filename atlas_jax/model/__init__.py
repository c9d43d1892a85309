"""Flax NNX causal LM for the Llama 3.x, Mistral and Qwen2.5 families."""
from atlas_jax.model.config import ModelConfig
from atlas_jax.model.factory import abstract_model, init_model, model_from_arrays, place_model, state_shardings
from atlas_jax.model.transformer import CausalLM

__all__ = ["ModelConfig", "CausalLM", "abstract_model", "init_model", "model_from_arrays", "place_model",
           "state_shardings"]
