"""`atlas-jax eval` end to end on a tiny random Llama with the tiny tokenizer: the agent's first
reply in every episode equals transformers' greedy ``generate`` on the same rendered prompt,
files and counts are written; a context too short for the prompt ends every episode as
``context_overflow`` without failing the run."""
from __future__ import annotations

import json

import pytest
import torch

from atlas_jax.cli import main
from atlas_jax.data.tiny_tokenizer import build_tiny_tokenizer
from atlas_jax.envs.agent_loop import END_REASONS

MAX_NEW = 12


@pytest.fixture(scope="module")
def tiny_agent_dir(tmp_path_factory):
    """A random Llama (vocab = the tiny tokenizer's 512) saved with the tokenizer beside it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny_agent")
    build_tiny_tokenizer(path)
    tok = AutoTokenizer.from_pretrained(path)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         initializer_range=0.3)  # sharp logits: replies are not one repeated token
    torch.manual_seed(0)
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def run_eval(model_dir, out, *extra):
    return main(["eval", "--model", str(model_dir), "--env", "textcraft", "--episodes", "2", "--out", str(out),
                 "--max-new-tokens", str(MAX_NEW), "--batch-size", "2", "--dtype", "float32", "--max-steps", "2",
                 "--on-unparsable", "continue", "--no-progress", *extra])


def hf_first_reply(model_dir, conversation):
    """transformers' greedy reply to the rendered instruction / acknowledgement / first observation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                for t in conversation[:3]]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW,
                             do_sample=False, eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_eval_cli_replies_match_transformers(tiny_agent_dir, tmp_path, capsys):
    assert run_eval(tiny_agent_dir, tmp_path) == 0
    records = [json.loads(line) for line in (tmp_path / "textcraft.jsonl").read_text().splitlines()]
    assert sorted(r["task_index"] for r in records) == [416, 536]  # the first two eval tasks (depth 4, then 3)
    for record in records:
        assert record["end_reason"] in END_REASONS and record["turns"] <= 2
        assert set(record) >= {"item_id", "task_index", "turns", "reward", "success", "conversations"}
        assert record["generated_tokens"] > 0
        assert record["conversations"][3]["value"] == hf_first_reply(tiny_agent_dir, record["conversations"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    env = summary["environments"][0]
    assert env["env"] == "textcraft" and env["episodes"] == 2 and sum(env["end_reasons"].values()) == 2
    assert env["success_rate"] == sum(r["success"] for r in records) / 2
    assert summary["generation"]["generated_tokens"] == sum(r["generated_tokens"] for r in records)
    assert "| textcraft | eval | 2 |" in capsys.readouterr().out
    assert (tmp_path / "summary.md").read_text().startswith("| env |")


def test_context_overflow_ends_episodes_without_failing(tiny_agent_dir, tmp_path):
    # the TextCraft prompt is ~1400 tokens: a 512-token context cannot hold it
    assert run_eval(tiny_agent_dir, tmp_path, "--max-len", "512") == 0
    env = json.loads((tmp_path / "summary.json").read_text())["environments"][0]
    assert env["end_reasons"]["context_overflow"] == 2 and env["success_rate"] == 0.0 and env["mean_turns"] == 0


def test_eval_against_serve_env_equals_in_process(tiny_agent_dir, tmp_path, capsys):
    """`eval --server` on `serve-env`: the same model, tasks and flags give the same episodes."""
    import threading

    from atlas_jax.envs.serve_env import EnvServer

    server = EnvServer("textcraft", "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert run_eval(tiny_agent_dir, tmp_path / "local", "--task-ids", "0,4") == 0
        assert run_eval(tiny_agent_dir, tmp_path / "remote", "--task-ids", "0,4", "--server", server.url) == 0
    finally:
        server.shutdown()
        server.server_close()
    local, remote = ({r["task_index"]: r for r in map(json.loads, (tmp_path / side / "textcraft.jsonl").open())}
                     for side in ("local", "remote"))
    assert sorted(remote) == [0, 4]
    for task in remote:
        for key in ("conversations", "turns", "reward", "success", "end_reason"):
            assert remote[task][key] == local[task][key], (task, key)
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())["environments"][0]
    assert summary["protocol"].startswith(f"AgentGym HTTP protocol at {server.url}")
    assert summary["success_rule"] == "final reward = 1" and summary["score_scale"] == 100.0
    assert "success = final reward = 1" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_smollm2_with_platform_defaults(smollm2_dir, tmp_path, capsys):
    """SmolLM2-135M on BabyAI with the default dtype (bfloat16 crashed batched decode on CPU):
    two short episodes run, the command says which dtype it chose, and turns after the first
    prefill only their new tokens (the rest comes from the KV cache)."""
    assert main(["eval", "--model", smollm2_dir, "--env", "babyai", "--episodes", "2", "--max-new-tokens", "24",
                 "--max-steps", "2", "--on-unparsable", "continue", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "compute dtype float32 (platform default on cpu)" in capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["environments"][0]["episodes"] == 2
    generation = summary["generation"]
    assert generation["dtype"] == "float32" and generation["calls"] >= 2
    assert 0 < generation["prefilled_tokens"] < generation["prompt_tokens"] * 0.75
