"""A real pretrained model end to end: SmolLM2-135M-Instruct (the `smollm2_dir` fixture, float32) loaded
into atlas-jax matches transformers' logits, and `atlas-jax score` on two AgentGym-layout trajectories
matches a PyTorch reference computed here from counterfactual conversations written out by hand."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEMPLATES = os.path.join(os.path.dirname(__file__), "..", "data", "templates")
ACK = "OK. I'll follow your instructions and try my best to solve the task."
INSTR = "You are an exploration master. Answer with:\nThought:\n<Your Thought>\n\nAction:\n<Your Action>"
GOAL1 = "Your goal: go to the red ball\nThere is a red ball 1 2 steps in front of you and 1 step to your left."
S11 = "Thought:\nThe red ball is ahead on my left.\n\nAction:\nturn left"
O11 = "You turn left. There is a red ball 1 2 steps in front of you."
S12 = "Thought:\nThe ball is now straight ahead.\n\nAction:\ngo to red ball 1"
O12 = "You are now next to the red ball. Goal complete."
S13 = "Thought:\nI reached the ball, the goal is done.\n\nAction:\ncheck available actions"
SYS = "You are a helpful agent."
INSTR2 = "You craft items in Minecraft. Use get, craft and inventory."
GOAL2 = "Crafting commands:\ncraft 4 oak planks using 1 oak log\nGoal: craft 4 oak planks."
S21 = "Thought:\nI need an oak log first.\n\nAction:\nget 1 oak log"
O21 = "Got 1 oak log"
S22 = "Thought:\nNow I can craft the planks.\n\nAction:\ncraft 4 oak planks using 1 oak log"


def m(*turns):
    return [{"role": {"s": "system", "u": "user", "a": "assistant"}[r], "content": c} for r, c in turns]


GYM1 = m(("u", INSTR), ("a", ACK), ("u", GOAL1), ("a", S11), ("u", O11), ("a", S12), ("u", O12), ("a", S13))
GYM2 = m(("s", SYS), ("u", INSTR2), ("a", ACK), ("u", GOAL2), ("a", S21), ("u", O21), ("a", S22))
# the counterfactuals, by hand: prompt_only = task context (through the goal) + the step; no_obs blanks the
# observation right before a step, never the goal; the acknowledgement (step 0) has neither
EXPECTED = {
    "gym1": {"prompt_only": {1: m(("u", INSTR), ("a", ACK), ("u", GOAL1), ("a", S11)),
                             2: m(("u", INSTR), ("a", ACK), ("u", GOAL1), ("a", S12)),
                             3: m(("u", INSTR), ("a", ACK), ("u", GOAL1), ("a", S13))},
             "no_obs": {2: m(("u", INSTR), ("a", ACK), ("u", GOAL1), ("a", S11), ("u", ""), ("a", S12)),
                        3: m(("u", INSTR), ("a", ACK), ("u", GOAL1), ("a", S11), ("u", O11), ("a", S12), ("u", ""),
                             ("a", S13))}},
    "gym2": {"prompt_only": {1: m(("s", SYS), ("u", INSTR2), ("a", ACK), ("u", GOAL2), ("a", S21)),
                             2: m(("s", SYS), ("u", INSTR2), ("a", ACK), ("u", GOAL2), ("a", S22))},
             "no_obs": {2: m(("s", SYS), ("u", INSTR2), ("a", ACK), ("u", GOAL2), ("a", S21), ("u", ""),
                             ("a", S22))}},
}


@pytest.fixture(scope="module")
def torch_model(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def model(smollm2_dir):
    """The Hugging Face directory imported into atlas-jax (what `import` and `score --model HF_DIR` use)."""
    from atlas_jax.convert.checkpoint import load_pretrained
    return load_pretrained(smollm2_dir, dtype="float32")


def reference(torch_model, tokenizer, messages) -> list[tuple[float, float, int]]:
    """(nll_sum, nll_mean, tokens) of every assistant turn by transformers (one forward), spans from the
    marked copy of the template (tests/data/templates)."""
    import torch
    with open(os.path.join(TEMPLATES, "smollm2.marked.jinja"), encoding="utf-8") as f:
        marked = f.read()
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                        chat_template=marked)
    mask = np.asarray(enc["assistant_masks"], bool)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(torch_model(ids).logits[0].double(), dim=-1)
    runs, t = [], 0
    while t < len(mask):
        if mask[t]:
            end = t
            while end < len(mask) and mask[end]:
                end += 1
            nll = torch.stack([-logp[p - 1, ids[0, p]] for p in range(t, end)])
            runs.append((float(nll.sum()), float(nll.mean()), end - t))
            t = end
        t += 1
    return runs


def test_logits_match_transformers_in_float32(model, tokenizer, torch_model):
    import jax.numpy as jnp
    import torch

    ids = tokenizer.apply_chat_template(GYM1, tokenize=True, return_dict=True)["input_ids"]
    ours = np.asarray(model(jnp.asarray([ids], jnp.int32)), np.float64)[0]
    with torch.no_grad():
        ref = torch_model(torch.tensor([ids])).logits[0].double().numpy()
    assert ours.shape == ref.shape == (len(ids), 49152)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=0)
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() > 0.99


def test_score_two_agentgym_trajectories_against_pytorch(model, tokenizer, torch_model):
    from atlas_jax.data.trajectory import parse_record
    from atlas_jax.selection.score_pass import ScoreOptions, score_trajectories

    def record(item_id, messages):
        conv = [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[x["role"]], "value": x["content"],
                 "loss": False if x["content"] == ACK else None} for x in messages]
        return parse_record({"item_id": item_id, "conversations": conv}, f"mem:{item_id}")

    trajectories = [record("gym1", GYM1), record("gym2", GYM2)]
    records, report = score_trajectories(trajectories, tokenizer, model,
                                         ScoreOptions(seq_len=512, batch_size=2, chunk=128))
    assert report.truncated_sequences == 0
    for rec, (item_id, messages) in zip(records, (("gym1", GYM1), ("gym2", GYM2))):
        steps = rec["steps"]
        full = reference(torch_model, tokenizer, messages)
        assert rec["item_id"] == item_id and len(steps) == len(full)
        for k, got in enumerate(steps):
            nll_sum, nll_mean, tokens = full[k]
            assert got["tokens"] == tokens
            np.testing.assert_allclose([got["nll_sum"], got["nll_mean"]], [nll_sum, nll_mean], rtol=1e-4, atol=1e-4)
            for variant, key, derived in (("prompt_only", "nll_mean_prompt_only", "ifd"),
                                          ("no_obs", "nll_mean_no_obs", "obs_dependence")):
                alt_messages = EXPECTED[item_id][variant].get(k)
                if alt_messages is None:
                    assert got[key] is None and got[derived] is None, (item_id, k, variant)
                    continue
                alt = reference(torch_model, tokenizer, alt_messages)[-1][1]
                np.testing.assert_allclose(got[key], alt, rtol=1e-4, atol=1e-4)
                want = nll_mean / alt if variant == "prompt_only" else alt - nll_mean
                np.testing.assert_allclose(got[derived], want, rtol=1e-3, atol=2e-4)
