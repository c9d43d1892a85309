"""Prefix sharing in the scoring pass: a trajectory's counterfactual variants run as segments of only
their differing suffix over the full sequence's prefix, and give the numbers of running each alone."""
from __future__ import annotations

import numpy as np
import pytest

from atlas_jax.selection.packing import pack, row_arrays
from atlas_jax.selection.variants import ScoreSequence
from tests.selection.conftest import agenttraj, corpus


def test_shared_prefix_mask_written_out_by_hand():
    """Trunk (segment 1, positions 0-4), branch A over its first 3 positions (positions 3-4), branch B
    over its first 1 (positions 1-2), one padding token: each row lists the keys a query sees."""
    import jax.numpy as jnp

    from atlas_jax.model.attention import SharedPrefix, attention_mask

    positions = jnp.array([[0, 1, 2, 3, 4, 3, 4, 1, 2, 0]])
    segments = jnp.array([[1, 1, 1, 1, 1, 2, 2, 3, 3, 0]])
    prefix = SharedPrefix(jnp.array([[0, 0, 0, 0, 0, 1, 1, 1, 1, 0]]), jnp.array([[0, 0, 0, 0, 0, 3, 3, 1, 1, 0]]))
    want = ["1000000000", "1100000000", "1110000000", "1111000000", "1111100000",
            "1110010000", "1110011000", "1000000100", "1000000110", "0000000001"]
    want_window2 = ["1000000000", "1100000000", "0110000000", "0011000000", "0001100000",
                    "0010010000", "0000011000", "1000000100", "0000000110", "0000000001"]
    for window, rows in ((None, want), (2, want_window2)):
        got = np.asarray(attention_mask(positions, positions, segments, segments, window, prefix))[0]
        assert ["".join(str(int(x)) for x in r) for r in got] == rows, window


def _synthetic(rng) -> list[ScoreSequence]:
    """Per item: a full sequence and variants that copy a prefix of it, then differ (as prompt_only and
    no_obs do), each scoring one step; one variant that differs from token 1 on."""
    out = []
    for item in range(4):
        n = int(rng.randint(30, 60))
        full = rng.randint(0, 50, n).astype(np.int32)
        steps = np.full(n, -1, np.int32)
        for k, start in enumerate(range(4, n - 3, 8)):
            steps[start:start + 4] = k
        out.append(ScoreSequence(f"i{item}", "full", full, steps))
        for k, cut in enumerate(range(3, n - 5, 9)):
            tail = rng.randint(50, 100, int(rng.randint(3, 12))).astype(np.int32)
            ids = np.concatenate([full[:cut], tail])
            own = np.full(len(ids), -1, np.int32)
            own[cut + 1:] = k  # the first differing token is context; the step follows
            out.append(ScoreSequence(f"i{item}", "no_obs" if k % 2 else "prompt_only", ids, own))
    ids = np.concatenate([[7], rng.randint(50, 100, 9)]).astype(np.int32)
    out.append(ScoreSequence("i0", "prompt_only", ids, np.array([-1] + [9] * 9, np.int32)))
    return out


@pytest.mark.parametrize("seq_len,num_slots", [(256, 32), (48, 12)])  # one tree per item; trees split and cut
def test_trees_hold_each_sequence_once_with_its_prefix(seq_len, num_slots):
    sequences = _synthetic(np.random.RandomState(1))
    alone_rows, alone = pack(sequences, seq_len, num_slots)
    rows, report = pack(sequences, seq_len, num_slots, share_prefixes=True)
    assert report.truncated_steps == alone.truncated_steps and report.sequence_tokens == alone.tokens
    assert report.tokens < (0.6 if seq_len == 256 else 0.8) * alone.tokens  # split trees repeat trunk prefixes
    seen, copies = [], 0
    for row in rows:
        assert row.length <= seq_len and row.slots < num_slots
        arrays = row_arrays(row, sequences, seq_len)
        starts = np.cumsum([0] + [keep - first for (_, keep, _), (first, _) in zip(row.parts, row.shares)])
        for j, ((i, keep, slots), (first, parent)) in enumerate(zip(row.parts, row.shares)):
            seq, cols = sequences[i], slice(starts[j], starts[j + 1])
            np.testing.assert_array_equal(arrays["input_ids"][cols], seq.token_ids_L[first:keep])
            np.testing.assert_array_equal(arrays["positions"][cols], np.arange(first, keep))
            assert (arrays["segment_ids"][cols] == j + 1).all()
            if parent < 0:
                assert first == 0 and (arrays["prefix_lengths"][cols] == 0).all()
            else:  # the parent segment holds this sequence's first `first` tokens at positions 0..first-1
                assert (arrays["prefix_segment_ids"][cols] == parent + 1).all()
                assert (arrays["prefix_lengths"][cols] == first).all()
                parent_cols = np.nonzero(arrays["segment_ids"] == parent + 1)[0][:first]
                np.testing.assert_array_equal(arrays["input_ids"][parent_cols], seq.token_ids_L[:first])
                np.testing.assert_array_equal(arrays["positions"][parent_cols], np.arange(first))
                assert first < 1 + np.argmax(seq.step_ids_L[1:] >= 0)  # its first prediction is its own
            if seq.variant == "full" and not slots:
                copies += 1  # an unscored trunk copy for branches that did not fit beside the full sequence
            for slot, step in slots:  # the positions predicting step `step`'s tokens carry its slot
                predicted = np.nonzero(seq.step_ids_L[first + 1:keep] == step)[0] + starts[j]
                np.testing.assert_array_equal(np.nonzero(arrays["slot_ids"] == slot)[0], predicted)
                seen.append((i, step))
    expected = [(i, s) for row in alone_rows for i, _, slots in row.parts for _, s in slots]
    assert sorted(seen) == sorted(expected)
    assert (copies > 0) == (seq_len == 48)


@pytest.fixture(scope="module")
def jax_model(hf_dir):
    from atlas_jax.convert.checkpoint import load_pretrained
    return load_pretrained(hf_dir, dtype="float32")


def test_shared_scores_equal_running_every_sequence_alone(jax_model, tokenizer):
    """Short rows: the small trajectories fit one tree each, the long ones are cut and their trees split
    over trunk copies (tests/selection/test_score.py checks the shared pass against transformers)."""
    from atlas_jax.data.trajectory import parse_record
    from atlas_jax.selection.score_pass import ScoreOptions, score_trajectories

    records = corpus() + [
        agenttraj("long_gym", [f"Thought: I should try move {s}. Action: go {s}" for s in range(12)],
                  task="Goal: find the key.", instruction="Act every round."),
        agenttraj("long_plain", [f"Action: turn {s}" for s in range(9)], task="Task: find the box.")]
    trajectories = [parse_record(r, f"mem:{r['item_id']}") for r in records]
    options = ScoreOptions(seq_len=160, batch_size=4, chunk=32, num_slots=64)
    alone, alone_report = score_trajectories(trajectories, tokenizer, jax_model,
                                             ScoreOptions(**{**options.__dict__, "share_prefixes": False}))
    shared, report = score_trajectories(trajectories, tokenizer, jax_model, options)
    assert report.sequence_tokens == alone_report.tokens and report.tokens < alone_report.tokens / 2
    assert report.truncated_steps == alone_report.truncated_steps > 0
    assert [r["item_id"] for r in shared] == [r["item_id"] for r in alone]
    checked = 0
    for got_rec, want_rec in zip(shared, alone):
        for got, want in zip(got_rec["steps"], want_rec["steps"], strict=True):
            assert got.keys() == want.keys()
            for key, value in want.items():
                if isinstance(value, float):
                    np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{got_rec['item_id']} {key}")
                    checked += 1
                else:
                    assert got[key] == value, (got_rec["item_id"], got["index"], key)
    assert checked > 100
