"""Host-side packing of score sequences into fixed [B, T] rows with per-target slot ids
(with the same packer as training batches, Grain's first-fit).

Every (sequence, step) to score gets a *slot* 1..S-1 inside its row; ``slot_ids[b, t]`` is the
slot of the token that position t predicts (targets are shifted inside each sequence, as in
atlas_jax.data.sequences), 0 where the target is not a scored step token. The device then
reduces per slot with one segment sum per metric. A sequence longer than T is cut to T tokens;
a step that loses any token is not scored and is reported as truncated.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from atlas_jax.selection.variants import ScoreSequence

ROW_KEYS = ("input_ids", "target_ids", "positions", "segment_ids", "slot_ids")


@dataclasses.dataclass
class Row:
    length: int = 0
    parts: list = dataclasses.field(default_factory=list)  # (sequence index, kept length, [(slot, step)])
    slots: int = 0


@dataclasses.dataclass
class PackReport:
    sequences: int = 0
    tokens: int = 0  # real tokens placed in rows
    truncated_sequences: int = 0
    truncated_steps: list = dataclasses.field(default_factory=list)  # (sequence index, step)


def _scored_steps(seq: ScoreSequence, keep: int) -> tuple[list[int], list[int]]:
    """(steps whose tokens all lie in the first ``keep`` tokens, steps that lose some)."""
    steps = np.unique(seq.step_ids_L[seq.step_ids_L >= 0]).tolist()
    cut = set(np.unique(seq.step_ids_L[keep:][seq.step_ids_L[keep:] >= 0]).tolist())
    return [s for s in steps if s not in cut], [s for s in steps if s in cut]


def pack(sequences: Sequence[ScoreSequence], seq_len: int, num_slots: int,
         open_rows: int = 64) -> tuple[list[Row], PackReport]:
    """Longest first, into rows of ``seq_len`` tokens and ``num_slots - 1`` slots each, with the
    training pipeline's packer (Grain's first-fit over ``open_rows`` open rows): a sequence is
    a "tokens" feature of its kept length and a "slots" feature of one entry per scored step,
    so both budgets hold per row."""
    import grain

    report = PackReport()
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].token_ids_L))
    elements, scored_steps = [], {}
    for i in order:
        seq = sequences[i]
        keep = min(len(seq.token_ids_L), seq_len)
        scored, cut = _scored_steps(seq, keep)
        report.sequences += 1
        report.tokens += keep
        if keep < len(seq.token_ids_L):
            report.truncated_sequences += 1
            report.truncated_steps.extend((i, s) for s in cut)
        if len(scored) > num_slots - 1:
            raise ValueError(f"item_id={seq.item_id!r}: {len(scored)} steps in one sequence exceed "
                             f"{num_slots - 1} slots per row; raise num_slots")
        scored_steps[i] = scored
        elements.append({"tokens": np.full(keep, i, np.int32), "slots": np.zeros(len(scored), np.int32)})
    if not elements:
        return [], report
    packed = grain.experimental.FirstFitPackIterDataset(
        grain.MapDataset.source(elements).to_iter_dataset(), length_struct={"tokens": seq_len, "slots": num_slots - 1},
        num_packing_bins=open_rows, shuffle_bins=False)
    rows = []
    for out in packed:
        row = Row()
        segments_T = out["tokens_segment_ids"]
        for segment in range(1, int(segments_T.max()) + 1):
            where = np.nonzero(segments_T == segment)[0]
            i = int(out["tokens"][where[0]])
            row.parts.append((i, len(where), [(row.slots + 1 + j, s) for j, s in enumerate(scored_steps[i])]))
            row.length += len(where)
            row.slots += len(scored_steps[i])
        rows.append(row)
    return rows, report


def row_arrays(row: Row, sequences: Sequence[ScoreSequence], seq_len: int) -> dict[str, np.ndarray]:
    """The [T] arrays of one row (ROW_KEYS)."""
    out = {k: np.zeros(seq_len, np.int32) for k in ROW_KEYS}
    start = 0
    for segment, (i, keep, slots) in enumerate(row.parts, start=1):
        seq = sequences[i]
        ids_L, steps_L = seq.token_ids_L[:keep], seq.step_ids_L[:keep]
        end = start + keep
        out["input_ids"][start:end] = ids_L
        out["target_ids"][start:end - 1] = ids_L[1:]
        out["positions"][start:end] = np.arange(keep)
        out["segment_ids"][start:end] = segment
        slot_of_step = np.zeros(int(steps_L.max(initial=-1)) + 2, np.int32)  # step + 1 -> slot; unscored -> 0
        for slot, s in slots:
            slot_of_step[s + 1] = slot
        out["slot_ids"][start:end - 1] = slot_of_step[steps_L[1:] + 1]  # position t predicts token t + 1
        start = end
    return out


def batches(rows: Sequence[Row], sequences: Sequence[ScoreSequence], seq_len: int,
            batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], list[Row]]]:
    """[B, T] batches of rows; the last one is padded with empty rows (all zeros: no slots)."""
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start:start + batch_size])
        arrays = [row_arrays(r, sequences, seq_len) for r in chunk]
        arrays += [{k: np.zeros(seq_len, np.int32) for k in ROW_KEYS}] * (batch_size - len(chunk))
        yield {k: np.stack([a[k] for a in arrays]) for k in ROW_KEYS}, chunk
