"""Shared fixtures for training tests: the tiny tokenizer, a small trajectory file, a tiny
model config, and a helper that builds a run config with overrides."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas_jax.train.config import load_run_config

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {
    "model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "tie_word_embeddings": True,
    "bos_token_id": 0, "eos_token_id": 3,
}


COLORS = ["red", "green", "blue", "purple", "yellow", "grey"]
THINGS = ["key", "ball", "box", "door"]


def trajectory(i: int) -> dict:
    """A small BabyAI-like AgentTraj-L record, different for every i."""
    color, thing = COLORS[i % len(COLORS)], THINGS[i % len(THINGS)]
    turns = [{"from": "human", "value": f"Task {i}: go to the {color} {thing}.", "loss": None}]
    for k in range(3):
        turns.append({"from": "gpt", "value": f"Thought: step {k}, the {color} {thing} is ahead.\n"
                                              f"Action: move forward", "loss": True})
        turns.append({"from": "human", "value": f"You see a {color} {thing} {3 - k} steps forward.", "loss": None})
    turns.append({"from": "gpt", "value": f"Thought: I reached it.\nAction: go to {color} {thing} 1", "loss": True})
    return {"item_id": f"toy_{i}", "conversations": turns}


@pytest.fixture(scope="session")
def train_assets(tmp_path_factory) -> dict:
    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("train_assets")
    tokenizer = build_tiny_tokenizer(root / "tokenizer")
    model_config = root / "tiny_model.json"
    model_config.write_text(json.dumps(TINY_MODEL))
    # short synthetic trajectories (the bundled sample's task prompts alone exceed 256 tokens)
    small = root / "small.jsonl"
    small.write_text("".join(json.dumps(trajectory(i)) + "\n" for i in range(8)))
    heldout = root / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(trajectory(i)) + "\n" for i in range(8, 12)))
    return {"tokenizer": str(tokenizer), "model_config": str(model_config), "train": str(small),
            "heldout": str(heldout), "root": root}


TINY_CPU = str(REPO / "configs/tiny_cpu.yaml")


def base_overrides(assets: dict, output_dir) -> list[str]:
    """configs/tiny_cpu.yaml shrunk for tests: 6 steps of 8 x 256 tokens on the tiny model,
    checkpoints at steps 2, 4, 6 with the last 2 kept."""
    return [f"output_dir={output_dir}", f"model.config={assets['model_config']}", "model.dtype=float32",
            f"data.train_files=[{assets['train']}]", f"data.tokenizer={assets['tokenizer']}", "data.mask_file=null",
            "data.seq_len=256", "data.global_batch_size=8", "data.encode.weight_mode=all", "eval.files=[]",
            "train.steps=6", "train.log_every=1", "train.save_every=2", "train.keep_checkpoints=2",
            "train.progress_bar=false", "train.async_checkpointing=false", "train.loss_chunk_tokens=512",
            "optim.learning_rate=3e-3", "optim.warmup_steps=1", "optim.final_lr_ratio=0.0", "mesh.fsdp=-1"]


def run_config(assets: dict, output_dir, *overrides: str):
    return load_run_config(TINY_CPU, base_overrides(assets, output_dir) + list(overrides))
