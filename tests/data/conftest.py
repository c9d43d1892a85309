"""Fixtures for the data tests: tiny tokenizers (built locally) and small trajectory files."""
from __future__ import annotations

import json

import pytest

from atlas_jax.data.chat_templates import MARKED_TEMPLATES, strip_generation_markers


def write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


ACK = "OK. I'll follow your instructions and try my best to solve the task."


def agenttraj(item_id: str, steps: list[str], observations: list[str] | None = None, task: str = "Go to the red key.",
              losses: list | None = None, system: str | None = None, instruction: str | None = None) -> dict:
    """An AgentTraj-L record: task, then step/observation pairs (the last step has no observation).

    With ``instruction``, AgentGym's layout: the instruction, the acknowledgement (step 0, loss false),
    then ``task`` as the first observation; ``steps`` are then steps 1..n.
    """
    observations = observations or [f"Observation: you see wall {i}." for i in range(len(steps) - 1)]
    conv = [{"from": "system", "value": system, "loss": None}] if system else []
    if instruction is not None:
        conv += [{"from": "human", "value": instruction, "loss": None}, {"from": "gpt", "value": ACK, "loss": False}]
    conv.append({"from": "human", "value": task, "loss": None})
    for i, step in enumerate(steps):
        conv.append({"from": "gpt", "value": step, "loss": None if losses is None else losses[i]})
        if i < len(observations):
            conv.append({"from": "human", "value": observations[i], "loss": None})
    return {"item_id": item_id, "conversations": conv}


def reference_sequence(tokenizer, record: dict, seq_len: int) -> tuple[int, ...]:
    """A record's training sequence from transformers (weight mode "all"): its chat template's ids up to
    the last assistant token, cut at ``seq_len``."""
    messages = [{"role": {"human": "user", "gpt": "assistant"}[t["from"]], "content": t["value"]}
                for t in record["conversations"]]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    last = max(i for i, m in enumerate(out["assistant_masks"]) if m)
    return tuple(out["input_ids"][:min(last + 1, seq_len)])


def corpus(n: int = 12) -> list[dict]:
    """n trajectories of 1..4 trainable steps with distinct texts (so sequences identify their trajectory);
    even ones in AgentGym's layout (instruction, acknowledgement = step 0, goal), odd ones plain ShareGPT."""
    return [agenttraj(f"traj_{i}", [f"Thought: plan {i}.{s}. Action: move {s}" for s in range(1 + i % 4)],
                      task=f"Task {i}: reach the goal.", instruction=None if i % 2 else "Act in the world.")
            for i in range(n)]


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    """{name: tokenizer dir}: "marked" (Llama-3 style with generation markers) and "unmarked"."""
    from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
    root = tmp_path_factory.mktemp("tok")
    return {"marked": build_tiny_tokenizer(root / "marked"),
            "unmarked": build_tiny_tokenizer(root / "unmarked", generation_markers=False)}


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dirs):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_dirs["marked"])


@pytest.fixture(scope="session")
def unmarked_tokenizer(tokenizer_dirs):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_dirs["unmarked"])


@pytest.fixture(scope="session")
def spm_tokenizer():
    """A tiny SentencePiece-style BPE as Llama 2 / Mistral ship it in tokenizer.json: "▁" for spaces (and
    one prepended), byte fallback, no pre-tokenizer; [INST]/[/INST]/</s> as control tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    from atlas_jax.data.tiny_tokenizer import _CORPUS

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    special = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=special, show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(params=sorted(MARKED_TEMPLATES))
def template_pair(request):
    """(name, marked template, the same template without markers)."""
    marked = MARKED_TEMPLATES[request.param]
    return request.param, marked, strip_generation_markers(marked)


@pytest.fixture
def corpus_file(tmp_path):
    return write_jsonl(tmp_path / "traj.jsonl", corpus())
