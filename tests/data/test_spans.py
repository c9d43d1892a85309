"""Step spans agree with transformers' assistant-token mask, on templates with and without markers."""
import numpy as np
import pytest

from atlas_jax.data.chat_templates import has_generation_markers
from atlas_jax.data.spans import SpanError, encode_conversation, encode_steps

CONVERSATIONS = {
    "plain": [{"role": "user", "content": "Go to the red key."},
              {"role": "assistant", "content": "Thought: look first. Action: look"},
              {"role": "user", "content": "Observation: a wall 2 steps forward."},
              {"role": "assistant", "content": "Action: turn left"}],
    "system and odd whitespace": [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "  Craft 4 oak planks.\n"},
        {"role": "assistant", "content": "\nThought: I need a log.\nAction: get 1 oak log  "},
        {"role": "user", "content": "Observation: Got 1 oak log."},
        {"role": "assistant", "content": "Action: craft 4 oak planks using 1 oak log"},
        {"role": "user", "content": "Observation: Crafted 4 oak planks."},
        {"role": "assistant", "content": "Thought: done ✓ → finish. Action: done"}],
    "ends with observation": [{"role": "user", "content": "Task"}, {"role": "assistant", "content": "Action: x"},
                              {"role": "user", "content": "Observation: y"}],
}


def reference(tokenizer, messages, marked_template):
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True, chat_template=marked_template)
    return np.asarray(out["input_ids"]), np.asarray(out["assistant_masks"], bool)


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_prefix_spans_on_unmarked_template_equal_transformers_mask(tokenizer, template_pair, conversation):
    name, marked, unmarked = template_pair
    messages = CONVERSATIONS[conversation]
    ref_ids, ref_mask = reference(tokenizer, messages, marked)
    assert ref_mask.any()
    for method, template in (("prefix", unmarked), ("prefix", marked), ("auto", unmarked), ("auto", marked)):
        ids, step_ids = encode_steps(tokenizer, messages, method=method, chat_template=template)
        np.testing.assert_array_equal(ids, ref_ids, err_msg=f"{name} {method}")
        np.testing.assert_array_equal(step_ids >= 0, ref_mask, err_msg=f"{name} {method}")


def test_step_numbering_follows_turn_order(tokenizer, template_pair):
    name, marked, unmarked = template_pair
    messages = CONVERSATIONS["system and odd whitespace"]
    contents = [m["content"] for m in messages if m["role"] == "assistant"]
    for template in (marked, unmarked):
        ids, step_ids = encode_steps(tokenizer, messages, chat_template=template)
        assert sorted(set(step_ids.tolist()) - {-1}) == [0, 1, 2]
        assert np.all(np.diff(step_ids[step_ids >= 0]) >= 0)  # non-decreasing: steps in order, contiguous
        for k, content in enumerate(contents):
            text = tokenizer.decode(ids[step_ids == k].tolist())
            assert content.strip() in text, (name, k, text)
            end = {"llama3": "<|eot_id|>", "llama31": "<|eot_id|>", "mistral": "<|eot_id|>", "qwen25": "<|im_end|>"}
            assert text.endswith(end[name])  # the end-of-turn token is generated, so it is part of the step


def test_prompt_and_observation_tokens_are_outside_steps(tokenizer):
    messages = CONVERSATIONS["plain"]
    ids, step_ids = encode_steps(tokenizer, messages)
    outside = tokenizer.decode(ids[step_ids < 0].tolist())
    assert "Go to the red key." in outside and "Observation: a wall 2 steps forward." in outside
    assert "Action" not in outside


def test_template_that_rewrites_history_is_rejected_without_markers(tokenizer):
    # Renders earlier turns differently once more turns follow: prefixes cannot locate spans.
    template = ("{%- for m in messages %}{{- m['role'] + ':' + m['content'] }}"
                "{%- if not loop.last %}{{- '|' + (messages|length|string) }}{%- endif %}{%- endfor %}")
    assert not has_generation_markers(template)
    with pytest.raises(SpanError, match="generation"):
        encode_steps(tokenizer, CONVERSATIONS["plain"], chat_template=template, where="f.jsonl:3")


def test_generation_start_hand_cases():
    from atlas_jax.data.spans import generation_start
    assert generation_start("<s>[INST] a[/INST]", "<s>[INST] a[/INST] b</s>") == len("<s>[INST] a[/INST]")
    # Mistral v0.3: the system text sits in the prompt's last user turn only
    assert generation_start("<s>[INST] sys\n\nobs[/INST]", "<s>[INST] obs[/INST] step</s>") == len(
        "<s>[INST] obs[/INST]")
    # a generation prompt the rendered turn does not continue (e.g. an opened <think> block): not alignable
    assert generation_start("<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\nAct: x\ny<|im_end|>") is None


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_last_only_marks_exactly_the_last_turn_of_transformers_mask(tokenizer, template_pair, conversation):
    # what a scoring counterfactual needs: the same ids, and only the last assistant turn's tokens
    # (numbered as in the whole conversation), for both span methods
    name, marked, unmarked = template_pair
    messages = CONVERSATIONS[conversation]
    ref_ids, ref_mask = reference(tokenizer, messages, marked)
    marked_at = np.flatnonzero(ref_mask)
    start = marked_at[-1]
    while start - 1 in marked_at:  # back to the start of the last run of marked tokens
        start -= 1
    want = np.zeros_like(ref_mask)
    want[start:marked_at[-1] + 1] = True
    last = sum(m["role"] == "assistant" for m in messages) - 1
    for method, template in (("prefix", unmarked), ("markers", marked), ("prefix", marked)):
        ids, step_ids, _ = encode_conversation(tokenizer, messages, method=method, chat_template=template,
                                               last_only=True)
        np.testing.assert_array_equal(ids, ref_ids, err_msg=f"{name} {method}")
        np.testing.assert_array_equal(step_ids >= 0, want, err_msg=f"{name} {method}")
        assert set(step_ids[step_ids >= 0].tolist()) == {last}
