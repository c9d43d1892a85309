"""Memory bounded by the configuration (issue 12, point 4): a huge message is cut to a character budget
before it is tokenized, the result equals the whole text's tokenization cut to max_length, and the
pipeline encodes only a bounded number of records ahead of what it has served."""
import json
import time

import numpy as np
import pytest

from atlas_jax.data.encode import EncodeOptions, TrajectoryEncoder
from atlas_jax.data.length import fit_length
from atlas_jax.data.pipeline import DataConfig, TrainData
from atlas_jax.data.trajectory import parse_record
from tests.data.conftest import agenttraj, corpus, write_jsonl

MAX_LENGTH = 96
HUGE_CHARS = 2_000_000


class RecordingTokenizer:
    """A Hugging Face tokenizer that remembers the longest text it was asked to tokenize and the longest
    message it was handed (rendering the chat template is not tokenizing, but it copies the text too)."""

    def __init__(self, inner):
        self.inner = inner
        self.longest_text = 0
        self.longest_message = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, text, *args, **kwargs):
        self.longest_text = max(self.longest_text, len(text))
        return self.inner(text, *args, **kwargs)

    def apply_chat_template(self, messages, *args, **kwargs):
        self.longest_message = max([self.longest_message] + [len(m["content"]) for m in messages])
        out = self.inner.apply_chat_template(messages, *args, **kwargs)
        if kwargs.get("tokenize"):  # the markers method tokenizes the rendering inside transformers
            self.longest_text = max(self.longest_text, len(self.inner.apply_chat_template(
                messages, tokenize=False, chat_template=kwargs.get("chat_template"))))
        return out


def huge_trajectory(word: str = "door ") -> dict:
    """Step 1 reads a 2 MB observation; the later steps (weighted) lie far beyond MAX_LENGTH tokens."""
    return agenttraj("huge", ["Thought: look. Action: look", "Thought: open it. Action: open door",
                              "Thought: done. Action: done"],
                     observations=[word * (HUGE_CHARS // len(word)), "Observation: it opens."])


@pytest.mark.parametrize("kind", ["marked", "unmarked"])  # generation markers / prefix spans
def test_huge_message_is_cut_before_tokenizing_and_the_kept_tokens_are_exact(tokenizer_dirs, kind):
    from transformers import AutoTokenizer

    inner = AutoTokenizer.from_pretrained(tokenizer_dirs[kind])
    tok = RecordingTokenizer(inner)
    traj = parse_record(huge_trajectory(), "huge.jsonl:1")
    encoder = TrajectoryEncoder(tok, EncodeOptions(weight_mode="all", max_length=MAX_LENGTH,
                                                   drop_after_last_weighted=False))
    got = encoder.prepare(traj)

    budget = encoder._budget_chars
    longest_entry = max(map(len, inner.get_vocab()))
    assert budget == (MAX_LENGTH + 64) * longest_entry < HUGE_CHARS // 20
    assert tok.longest_message <= budget  # the 2 MB text never reached the tokenizer
    assert tok.longest_text < budget + 2000  # the rendering around it: template and the other turns
    assert encoder.report.length.messages_cut == 4  # the observation, then the three turns past the budget
    assert encoder.report.length.sequences_with_cut_messages == 1
    assert "4 messages in 1 sequences cut before tokenizing" in encoder.report.summary()

    # independent reference: transformers tokenizes the whole conversation; cut to max_length
    whole = TrajectoryEncoder(inner, EncodeOptions(weight_mode="all")).encode(traj)
    ids, steps, weights = fit_length(whole.token_ids, whole.step_ids, whole.token_weights, max_length=MAX_LENGTH,
                                     drop_after_last_weighted=False)
    assert len(got.token_ids) == MAX_LENGTH
    np.testing.assert_array_equal(got.token_ids, ids)
    np.testing.assert_array_equal(got.step_ids, steps)
    np.testing.assert_array_equal(got.token_weights, weights)


def test_a_trajectory_within_the_budget_is_not_changed(tokenizer):
    tok = RecordingTokenizer(tokenizer)
    records = corpus(6) + [huge_trajectory()]
    records[-1]["conversations"][2]["value"] = "short " * 50  # long for max_length, short for the budget
    encoder = TrajectoryEncoder(tok, EncodeOptions(weight_mode="all", max_length=MAX_LENGTH))
    reference = TrajectoryEncoder(tokenizer, EncodeOptions(weight_mode="all"))
    for i, record in enumerate(records):
        traj = parse_record(record, f"c.jsonl:{i + 1}")
        got = encoder.prepare(traj)
        whole = reference.encode(traj)
        ids, _, weights = fit_length(whole.token_ids, whole.step_ids, whole.token_weights, max_length=MAX_LENGTH)
        np.testing.assert_array_equal(got.token_ids, ids)
        np.testing.assert_array_equal(got.token_weights, weights)
    assert encoder.report.length.messages_cut == 0 and "cut before tokenizing" not in encoder.report.summary()


def test_cut_step_keeps_a_visible_character():
    from atlas_jax.data.length import cut_messages

    messages = [{"role": "user", "content": "abcdef"}, {"role": "assistant", "content": "\n\n  Action: go"},
                {"role": "user", "content": "xyz"}]
    out, cut = cut_messages(messages, 4)
    assert cut == 3
    assert [m["content"] for m in out] == ["abcd", "\n\n  A", ""]
    assert cut_messages(messages, 100) == (messages, 0)


def test_pipeline_encodes_a_bounded_number_of_records_ahead(tmp_path, tokenizer_dirs):
    """Grain's default read-ahead (500 records, 16 threads) encoded the whole of a small data set for the first
    batch; now at most data.read_ahead records wait beyond what the packer has taken."""
    path = write_jsonl(tmp_path / "many.jsonl", corpus(200))
    cfg = DataConfig(train_files=[path], tokenizer=tokenizer_dirs["marked"], seq_len=128, global_batch_size=2,
                     encode=EncodeOptions(weight_mode="all"), read_ahead=4, num_packing_bins=2)
    data = TrainData(cfg, process_index=0, process_count=1)
    next(data)
    time.sleep(0.5)  # let the read-ahead thread fill its buffer
    report = data.encode_report
    encoded = report.encoded + report.no_weighted_tokens
    assert 0 < encoded <= 40, report.summary()  # rows of 128 tokens hold a few records; far from 200
