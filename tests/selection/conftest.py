"""Fixtures for the selection tests: a tiny tokenizer and tiny Llama (built locally), small trajectories."""
from __future__ import annotations

import json

import pytest

VOCAB = 512  # the tiny tokenizer's vocabulary


def write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


ACK = "OK. I'll follow your instructions and try my best to solve the task."


def agenttraj(item_id: str, steps: list[str], task: str, system: str | None = None,
              instruction: str | None = None) -> dict:
    """AgentTraj-L record: task, then step/observation pairs (the last step has no observation).

    With ``instruction``, AgentGym's layout: instruction, acknowledgement (step 0, loss false), then
    ``task`` as the first observation, carrying the goal; ``steps`` are then steps 1..n.
    """
    conv = [{"from": "system", "value": system}] if system else []
    if instruction is not None:
        conv += [{"from": "human", "value": instruction}, {"from": "gpt", "value": ACK, "loss": False}]
    conv.append({"from": "human", "value": task})
    for i, step in enumerate(steps):
        conv.append({"from": "gpt", "value": step})
        if i < len(steps) - 1:
            conv.append({"from": "human", "value": f"Observation: you see a red key {i} steps forward."})
    return {"item_id": item_id, "conversations": conv}


def corpus() -> list[dict]:
    """Trajectories of 1..5 trainable steps with distinct texts; even ones in AgentGym's layout
    (instruction, acknowledgement, goal), odd ones plain; one of each has a system prompt."""
    out = []
    for i in range(5):
        steps = [f"Thought: step {s} of task {i}. Action: move forward {s}" for s in range(1 + i)]
        out.append(agenttraj(f"traj_{i}", steps, task=f"Task {i}: go to the green ball.",
                             system="You are an agent." if i in (2, 3) else None,
                             instruction=None if i % 2 else "Every round you get an observation. Act."))
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> str:
    """A tiny random Llama (GQA, untied head) saved as safetensors; eager attention for the reference."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # sharper distributions than the default init, so NLLs differ by step
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp("hf_llama")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def traj_file(tmp_path_factory) -> str:
    return write_jsonl(tmp_path_factory.mktemp("data") / "traj.jsonl", corpus())
