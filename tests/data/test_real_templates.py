"""Step spans on the real chat templates of Llama-3.1-Instruct, Qwen2.5-Instruct, Mistral-7B-Instruct-v0.3
and SmolLM2 (ChatML) equal, token for token, what transformers marks on a copy with `{% generation %}`
markers (tests/data/templates/README.md), on AgentGym-layout conversations with a system turn and
leading/trailing whitespace; and the tokens are those of the whole rendering tokenized at once."""
from __future__ import annotations

import os

import numpy as np
import pytest

from atlas_jax.data.spans import encode_steps, runs_to_step_ids

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
NAMES = ("llama31", "qwen25", "mistral_v03", "smollm2")
ACK = "OK. I'll follow your instructions and try my best to solve the task."
INSTRUCTION = ("You are an exploration master that wants to finish every goal you are given.\n\n"
               "Your response should use the following format:\nThought:\n<Your Thought>\n\nAction:\n<Your Action>")


def template(name: str, marked: bool = False) -> str:
    with open(os.path.join(TEMPLATES, f"{name}{'.marked' if marked else ''}.jinja"), encoding="utf-8") as f:
        return f.read()


def agentgym(system: str | None, ends_with_observation: bool = False) -> list[dict]:
    """AgentGym's layout: instruction, acknowledgement, first observation with the goal, steps."""
    turns = [{"role": "system", "content": system}] if system is not None else []
    turns += [{"role": "user", "content": INSTRUCTION + "\n"},
              {"role": "assistant", "content": ACK},
              {"role": "user", "content": "\nYour goal: go to the red ball\nThere is a red ball 1 2 steps left.  "},
              {"role": "assistant", "content": "\n Thought:\nI see the red ball.\n\nAction:\nturn left  \n"},
              {"role": "user", "content": "  You turn left.\n\n"},
              {"role": "assistant", "content": "Thought:\n\tIt is ahead ✓\n\nAction:\ngo to red ball 1"}]
    if ends_with_observation:
        turns.append({"role": "user", "content": "You reach the red ball. Goal done.\n"})
    return turns


CONVERSATIONS = {"system": agentgym("  You are a careful agent.\n"), "no system": agentgym(None),
                 "system, ends with observation": agentgym("You are an agent.", True)}


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(params=["tiny", "spm", "smollm2"])
def any_tokenizer(request, tokenizer, spm_tokenizer, smol_tokenizer):
    """The tiny byte-level test tokenizer (control tokens of every family as single tokens), a tiny
    SentencePiece-style one (Mistral's kind: the space before a step merges into its first token) and
    SmolLM2's real one."""
    return {"tiny": tokenizer, "spm": spm_tokenizer, "smollm2": smol_tokenizer}[request.param]


def test_the_smollm2_template_is_the_models_own(smol_tokenizer):
    assert smol_tokenizer.chat_template == template("smollm2")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_real_template_spans_equal_transformers_mask(any_tokenizer, name, conversation):
    tok, messages = any_tokenizer, CONVERSATIONS[conversation]
    real, marked = template(name), template(name, marked=True)
    for gen in (False, True):  # the marked copy only adds markers: same text
        assert (tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=marked)
                == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=real))
    ref = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                  chat_template=marked)
    ref_steps, runs = runs_to_step_ids(ref["assistant_masks"])
    assert runs == 3
    ids, step_ids = encode_steps(tok, messages, chat_template=real)
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(step_ids, ref_steps)
    # the tokens training sees: the whole rendering, tokenized at once, as at inference
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=real)
    assert ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert ids.tolist() == tok.apply_chat_template(messages, tokenize=True, return_dict=True, chat_template=real)[
        "input_ids"]


def test_per_segment_tokenization_would_differ(smol_tokenizer):
    """Tokenizing template segments separately shifts merges at their boundaries (here Qwen's newline
    after the assistant header meets the step's leading newline): the test above would catch it."""
    tok, messages = smol_tokenizer, CONVERSATIONS["system"]
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=template("qwen25"))
    ids, step_ids = encode_steps(tok, messages, chat_template=template("qwen25"))
    cut = text.index("\n Thought:")  # where the first real step's content starts
    pieces = tok(text[:cut], add_special_tokens=False)["input_ids"] + tok(text[cut:], add_special_tokens=False)[
        "input_ids"]
    assert pieces != ids.tolist()


def test_hand_checked_spans_on_the_real_templates(tokenizer):
    """What each step's tokens decode to, written out by hand from the templates' text."""
    messages = CONVERSATIONS["system"]

    def steps(name):
        ids, step_ids = encode_steps(tokenizer, messages, chat_template=template(name))
        return [tokenizer.decode(ids[step_ids == k].tolist()) for k in range(3)], tokenizer.decode(ids.tolist())

    llama, text = steps("llama31")  # trims every message; a system block with dates
    assert llama == [ACK + "<|eot_id|>", "Thought:\nI see the red ball.\n\nAction:\nturn left<|eot_id|>",
                     "Thought:\n\tIt is ahead ✓\n\nAction:\ngo to red ball 1<|eot_id|>"]
    assert ("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            "You are a careful agent.<|eot_id|>") in text
    qwen, _ = steps("qwen25")  # no trimming; the newline after <|im_end|> is not generated
    assert qwen == [ACK + "<|im_end|>", "\n Thought:\nI see the red ball.\n\nAction:\nturn left  \n<|im_end|>",
                    "Thought:\n\tIt is ahead ✓\n\nAction:\ngo to red ball 1<|im_end|>"]
    mistral, text = steps("mistral_v03")  # " " + trimmed content + eos; the system message only reaches a
    assert mistral == [" " + ACK + "<|eot_id|>",  # conversation that ends with a user turn
                       " Thought:\nI see the red ball.\n\nAction:\nturn left<|eot_id|>",
                       " Thought:\n\tIt is ahead ✓\n\nAction:\ngo to red ball 1<|eot_id|>"]
    assert "careful agent" not in text
    _, text = steps("smollm2")
    assert text.startswith("<|im_start|>system\n  You are a careful agent.\n<|im_end|>\n")


def test_mistral_system_fold_is_handled_when_the_conversation_ends_with_a_user_turn(tokenizer):
    messages = CONVERSATIONS["system, ends with observation"]
    ids, step_ids = encode_steps(tokenizer, messages, chat_template=template("mistral_v03"))
    text = tokenizer.decode(ids.tolist())
    assert text.endswith("[INST] You are an agent.\n\nYou reach the red ball. Goal done.\n[/INST]")
    assert tokenizer.decode(ids[step_ids == 1].tolist()).startswith(" Thought:\nI see")


def test_mistral_step_starts_with_the_space_the_model_generates(spm_tokenizer):
    """After "[/INST]" the model emits " Thought..." as one "▁..." token: that token is the step's first."""
    ids, step_ids = encode_steps(spm_tokenizer, CONVERSATIONS["system"], chat_template=template("mistral_v03"))
    tokens = spm_tokenizer.convert_ids_to_tokens(ids.tolist())
    for k in range(3):
        first = int(np.flatnonzero(step_ids == k)[0])
        assert tokens[first - 1] == "[/INST]" and tokens[first].startswith("▁"), (k, tokens[first - 1:first + 2])
        assert tokens[int(np.flatnonzero(step_ids == k)[-1])] == "</s>"


def test_encoder_trains_on_the_whole_rendering_and_never_on_the_acknowledgement(smol_tokenizer):
    """The trainer's encoder on SmolLM2's own template: token ids = the whole rendering tokenized at once;
    weight mode all weighs steps 1 and 2, never the acknowledgement (step 0)."""
    from atlas_jax.data.encode import EncodeOptions, TrajectoryEncoder
    from atlas_jax.data.trajectory import parse_record

    conv = [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[x["role"]], "value": x["content"],
             "loss": False if x["content"] == ACK else None} for x in CONVERSATIONS["system"]]
    traj = parse_record({"item_id": "g", "conversations": conv}, "mem:1")
    enc = TrajectoryEncoder(smol_tokenizer, EncodeOptions(weight_mode="all")).encode(traj)
    text = smol_tokenizer.apply_chat_template(traj.messages(), tokenize=False)
    assert enc.token_ids.tolist() == smol_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sorted(set(enc.step_ids[enc.token_weights > 0].tolist())) == [1, 2]
    assert (enc.step_ids == 0).sum() > 0 and not enc.token_weights[enc.step_ids == 0].any()
    assert smol_tokenizer.decode(enc.token_ids[enc.step_ids == 0].tolist()) == ACK + "<|im_end|>"


def counterfactuals(messages: list[dict]) -> list[list[dict]]:
    """The scoring pass's two rewrites of the last step (variants.py): its observation blanked, and
    the task context followed by the step alone."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    no_obs = [dict(m) for m in messages[:last + 1]]
    no_obs[last - 1] = {"role": "user", "content": ""}
    first_obs = next(i for i, m in enumerate(messages) if m["role"] == "user" and i > 1)
    return [no_obs, messages[:first_obs + 1] + [messages[last]]]


@pytest.mark.parametrize("name", NAMES)
def test_counterfactuals_tokenized_from_the_shared_beginning_equal_whole_tokenization(any_tokenizer, name,
                                                                                     monkeypatch):
    from atlas_jax.data import shared_tokens
    from atlas_jax.data.spans import encode_conversation

    monkeypatch.setattr(shared_tokens, "CHECKS", 0)  # the reuse itself, never its whole-text fallback
    tok, real = any_tokenizer, template(name)
    tokenized = []
    plain = shared_tokens.tokenize
    monkeypatch.setattr(shared_tokens, "tokenize", lambda t, text: tokenized.append(text) or plain(t, text))
    added = [t.content for t in tok.added_tokens_decoder.values()]
    for messages in (CONVERSATIONS["system"], CONVERSATIONS["no system"]):
        _, _, full = encode_conversation(tok, messages, chat_template=real)
        for variant in counterfactuals(messages):
            tokenized.clear()
            ids, step_ids, tokens = encode_conversation(tok, variant, chat_template=real, last_only=True, known=full)
            # the template's control tokens are the tokenizer's own (tiny: every family's): only a tail is tokenized
            if sum(tokens.text.count(a) for a in added) > 1:
                assert len(tokenized[0]) < len(tokens.text)
            whole = tok(tok.apply_chat_template(variant, tokenize=False, chat_template=real), add_special_tokens=False)
            assert ids.tolist() == whole["input_ids"]
            ref = tok.apply_chat_template(variant, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                          chat_template=template(name, marked=True))
            ref_steps, runs = runs_to_step_ids(ref["assistant_masks"])
            np.testing.assert_array_equal(step_ids, np.where(ref_steps == runs - 1, ref_steps, -1))


def test_a_tokenizer_that_breaks_reuse_falls_back_to_whole_texts(smol_tokenizer, monkeypatch, caplog):
    from atlas_jax.data import shared_tokens

    tok = smol_tokenizer
    start = "<|im_start|>user\nfind the ball<|im_end|>\n<|im_start|>assistant\n"
    known = shared_tokens.tokenize(tok, start + "go to the ball<|im_end|>")
    text = start + "go to the box<|im_end|>"
    # stand-in for a tokenizer whose pieces are not independent: the shared tokens are not text's
    ids = known.ids_L.copy()
    ids[2] = (ids[2] + 1) % len(tok)
    known = shared_tokens.Tokenized(known.text, ids, known.offsets_Lx2)
    monkeypatch.setattr(shared_tokens, "_checked", shared_tokens.weakref.WeakKeyDictionary())
    got = shared_tokens.tokenize_sharing(tok, text, known)
    assert got.ids_L.tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert "tokenized whole from now on" in caplog.text
    assert shared_tokens._checked[tok] == -1
    monkeypatch.setattr(shared_tokens, "tokenize", lambda *a: pytest.fail("reuse is off: whole texts only"))
    with pytest.raises(pytest.fail.Exception):
        shared_tokens.tokenize_sharing(tok, text, known)
