"""Mask files, weight modes and length handling, checked against transformers' mask and hand counts."""
import numpy as np
import pytest

from atlas_jax.data.encode import EncodeOptions, TrajectoryEncoder
from atlas_jax.data.length import LengthStats, fit_length
from atlas_jax.data.mask import MaskError, check_mask_against, read_mask
from atlas_jax.data.trajectory import parse_record
from tests.data.conftest import agenttraj, write_jsonl

STEPS = ["Thought: look. Action: look", "Action: pick up red key", "Action: open door", "Action: done"]
# AgentGym's layout: step 0 is the acknowledgement (loss false), STEPS are steps 1..4; step 3 is also loss false
TRAJ = parse_record(agenttraj("t", STEPS, losses=[True, None, False, True], instruction="Act in the world."), "mem:1")


def reference_step_ids(tokenizer, traj):
    """Step index per token from transformers' assistant mask: k-th run of ones = step k."""
    out = tokenizer.apply_chat_template(traj.messages(), tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    mask = np.asarray(out["assistant_masks"])
    starts = np.flatnonzero(np.diff(np.concatenate([[0], mask])) == 1)
    step_ids = np.full(len(mask), -1)
    for k, s in enumerate(starts):
        e = s
        while e < len(mask) and mask[e]:
            e += 1
        step_ids[s:e] = k
    return np.asarray(out["input_ids"]), step_ids


@pytest.mark.parametrize("mode,critical,weights,expected", [
    ("mask", [1, 4], None, [0, 1, 0, 0, 1]),
    ("mask", [4, 1], [0.5, 2.0], [0, 2.0, 0, 0, 0.5]),
    ("all", None, None, [0, 1, 1, 0, 1]),  # every trainable step; never the acknowledgement
    ("agentgym", None, None, [0, 1, 1, 0, 1]),  # loss flags False (ack), True, None, False, True
])
def test_token_weights_per_mode(tmp_path, unmarked_tokenizer, tokenizer, mode, critical, weights, expected):
    mask = None
    if critical is not None:
        entry = {"item_id": "t", "num_steps": 5, "critical": critical}
        if weights is not None:
            entry["weights"] = weights
        mask = read_mask(write_jsonl(tmp_path / "mask.jsonl", [entry]))
    enc = TrajectoryEncoder(unmarked_tokenizer, EncodeOptions(weight_mode=mode), mask).encode(TRAJ)
    ref_ids, ref_steps = reference_step_ids(tokenizer, TRAJ)  # marked twin: transformers' definition
    np.testing.assert_array_equal(enc.token_ids, ref_ids)
    np.testing.assert_array_equal(enc.step_ids, ref_steps)
    expected_w = np.where(ref_steps >= 0, np.asarray(expected, np.float32)[ref_steps], 0)
    assert enc.token_weights.dtype == np.float32
    np.testing.assert_array_equal(enc.token_weights, expected_w)


def test_mask_file_errors(tmp_path, corpus_file):
    from atlas_jax.data.trajectory import read_trajectories
    trajs, _ = read_trajectories(corpus_file)
    cases = [
        ({"item_id": "traj_1", "num_steps": 2, "critical": [2]}, "out of range"),
        ({"item_id": "traj_1", "num_steps": 2, "critical": [0], "weights": [1, 2]}, "one float per critical"),
        ({"item_id": "traj_1", "num_steps": 2, "critical": [0], "weights": [-1]}, "non-negative"),
        ({"item_id": "traj_1", "critical": [0]}, "num_steps"),
        ("{not json", "invalid JSON"),
    ]
    for record, what in cases:
        path = write_jsonl(tmp_path / "m.jsonl", [{"item_id": "traj_0", "num_steps": 1, "critical": [0]}, record])
        with pytest.raises(MaskError, match=what) as err:
            read_mask(path)
        assert f"{path}:2" in str(err.value)
    dup = write_jsonl(tmp_path / "d.jsonl", [{"item_id": "traj_0", "num_steps": 1, "critical": [0]}] * 2)
    with pytest.raises(MaskError, match="duplicate"):
        read_mask(dup)
    missing = read_mask(write_jsonl(tmp_path / "x.jsonl", [{"item_id": "nope", "num_steps": 1, "critical": [0]}]))
    with pytest.raises(MaskError, match="item_id='nope'.*not in the data"):
        check_mask_against(missing, trajs)
    wrong = read_mask(write_jsonl(tmp_path / "w.jsonl", [{"item_id": "traj_1", "num_steps": 5, "critical": [0]}]))
    with pytest.raises(MaskError, match="num_steps=5 but the trajectory has 2"):
        check_mask_against(wrong, trajs)


def test_unmasked_trajectories_are_counted_per_policy(tmp_path, tokenizer):
    mask = read_mask(write_jsonl(tmp_path / "m.jsonl", [{"item_id": "a", "num_steps": 1, "critical": [0]}]))
    a, b = (parse_record(agenttraj(i, ["Action: go"]), f"mem:{i}") for i in "ab")
    with pytest.raises(MaskError, match="item_id='b': no entry in the mask"):
        TrajectoryEncoder(tokenizer, EncodeOptions(), mask).prepare(b)
    skip = TrajectoryEncoder(tokenizer, EncodeOptions(unmasked="skip"), mask)
    assert skip.prepare(a) is not None and skip.prepare(b) is None
    assert (skip.report.encoded, skip.report.skipped_unmasked) == (1, 1)
    every = TrajectoryEncoder(tokenizer, EncodeOptions(unmasked="all"), mask)
    enc = every.prepare(b)
    assert enc is not None and (enc.token_weights > 0).sum() == (enc.step_ids >= 0).sum() > 0
    assert every.report.all_steps_unmasked == 1
    empty = read_mask(write_jsonl(tmp_path / "e.jsonl", [{"item_id": "a", "num_steps": 1, "critical": []}]))
    enc_empty = TrajectoryEncoder(tokenizer, EncodeOptions(), empty)
    assert enc_empty.prepare(a) is None and enc_empty.report.no_weighted_tokens == 1


def test_a_mask_naming_a_context_step_is_an_error(tmp_path, tokenizer):
    for step in (0, 3):  # the acknowledgement, and a later loss-false turn
        mask = read_mask(write_jsonl(tmp_path / "m.jsonl", [{"item_id": "t", "num_steps": 5, "critical": [1, step]}]))
        with pytest.raises(MaskError, match=f"critical step {step} is marked loss: false"):
            TrajectoryEncoder(tokenizer, EncodeOptions(), mask).prepare(TRAJ)


def test_fit_length_hand_counts():
    #            0  1  2  3  4  5  6  7  8  9
    steps = np.array([-1, -1, 0, 0, -1, 1, 1, 1, -1, -1])
    weights = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 0], np.float32)
    ids = np.arange(10)
    stats = LengthStats()
    out_ids, _, out_w = fit_length(ids, steps, weights, max_length=None, stats=stats)
    assert out_ids.tolist() == list(range(8)) and stats.tail_tokens_dropped == 2
    stats = LengthStats()
    out_ids, _, out_w = fit_length(ids, steps, weights, max_length=6, stats=stats)  # cuts inside step 1
    assert out_ids.tolist() == list(range(6)) and out_w.tolist() == [0, 0, 1, 1, 0, 1]
    assert (stats.truncated_sequences, stats.truncated_tokens, stats.truncated_weighted_tokens) == (1, 2, 2)
    assert (stats.steps_cut, stats.steps_dropped, stats.tail_tokens_dropped) == (1, 0, 2)
    stats = LengthStats()
    fit_length(ids, steps, weights, max_length=4, drop_after_last_weighted=False, stats=stats)
    assert (stats.truncated_tokens, stats.truncated_weighted_tokens, stats.steps_cut, stats.steps_dropped) == (
        6, 3, 0, 1)
    assert (stats.tokens_in, stats.tokens_out, stats.tail_tokens_dropped) == (10, 4, 0)


def test_prepare_drops_tail_and_reports_savings(tokenizer, tmp_path):
    mask = read_mask(write_jsonl(tmp_path / "m.jsonl", [{"item_id": "t", "num_steps": 5, "critical": [1]}]))
    encoder = TrajectoryEncoder(tokenizer, EncodeOptions(), mask)
    full = encoder.encode(TRAJ)
    prepared = encoder.prepare(TRAJ)
    last_step1 = int(np.flatnonzero(full.step_ids == 1)[-1])
    assert len(prepared.token_ids) == last_step1 + 1
    assert tokenizer.decode(prepared.token_ids[-1:].tolist()) == "<|eot_id|>"
    assert encoder.report.length.tail_tokens_dropped == len(full.token_ids) - last_step1 - 1 > 0


def test_truncation_inside_a_weighted_span_is_reported(tokenizer, caplog):
    full = TrajectoryEncoder(tokenizer, EncodeOptions(weight_mode="all")).encode(TRAJ)
    cut = int(np.flatnonzero(full.step_ids == 2)[2])  # three tokens into step 2
    encoder = TrajectoryEncoder(tokenizer, EncodeOptions(weight_mode="all", max_length=cut))
    cut_steps = sorted(set(full.step_ids[cut:][full.token_weights[cut:] > 0].tolist()))
    assert cut_steps == [2, 4]  # step 3 is loss false: not weighted, not counted
    with caplog.at_level("WARNING"):
        prepared = encoder.prepare(TRAJ)
    assert len(prepared.token_ids) == cut
    stats = encoder.report.length
    assert stats.truncated_weighted_tokens == int((full.token_weights[cut:] > 0).sum()) > 0
    assert (stats.steps_cut, stats.steps_dropped) == (1, 1)
    assert f"item_id='t': max_length={cut} cuts {stats.truncated_weighted_tokens} weighted tokens" in caplog.text
