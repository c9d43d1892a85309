"""Score packing (Grain's first-fit, shared with training): every scored step lands in exactly
one slot, rows respect the token and slot budgets, and each row reproduces its sequences."""
from __future__ import annotations

import numpy as np

from atlas_jax.selection.packing import pack, row_arrays
from atlas_jax.selection.variants import ScoreSequence


def test_pack_budgets_and_contents():
    rng = np.random.RandomState(0)
    sequences = []
    for i in range(12):
        n = int(rng.randint(3, 30))
        steps = np.full(n, -1, np.int32)
        for k, start in enumerate(range(1, n - 2, 6)):  # a step every 6 tokens, 3 tokens long
            steps[start:start + 3] = k
        sequences.append(ScoreSequence(f"t{i}", "full", rng.randint(0, 100, n).astype(np.int32), steps))
    sequences.append(ScoreSequence("long", "full", np.arange(40, dtype=np.int32),
                                   np.where(np.arange(40) >= 35, 0, -1).astype(np.int32)))  # cut: step 0 lost
    rows, report = pack(sequences, seq_len=32, num_slots=6)
    assert report.truncated_sequences == 1 and report.truncated_steps == [(12, 0)]
    seen = []
    for row in rows:
        assert row.length <= 32 and row.slots <= 5
        arrays = row_arrays(row, sequences, 32)
        start = 0
        for i, keep, slots in row.parts:
            seq = sequences[i]
            np.testing.assert_array_equal(arrays["input_ids"][start:start + keep], seq.token_ids_L[:keep])
            np.testing.assert_array_equal(arrays["positions"][start:start + keep], np.arange(keep))
            for slot, step in slots:  # the positions predicting step `step`'s tokens carry its slot
                predicted = np.nonzero(seq.step_ids_L[1:keep] == step)[0] + start
                np.testing.assert_array_equal(np.nonzero(arrays["slot_ids"] == slot)[0], predicted)
                seen.append((i, step))
            start += keep
    expected = [(i, s) for i, seq in enumerate(sequences) for s in np.unique(seq.step_ids_L[seq.step_ids_L >= 0])
                if (i, s) != (12, 0)]
    assert sorted(seen) == sorted(expected)
    assert report.tokens == sum(min(len(s.token_ids_L), 32) for s in sequences)


def test_scored_capacity():
    from atlas_jax.selection.scoring import scored_capacity
    slots = np.zeros((2, 256), np.int32)
    slots[1, :70] = 3
    assert scored_capacity(slots) == 128  # 70 scored positions in row 1 -> next power of two
    slots[0, :10] = 1
    assert scored_capacity(slots[:1]) == 64  # at least 64
    slots[1, :] = 2
    assert scored_capacity(slots) is None  # the whole row: no gather
