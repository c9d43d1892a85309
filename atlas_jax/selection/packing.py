"""Host-side packing of score sequences into fixed [B, T] rows with per-target slot ids
(with the same packer as training batches, Grain's first-fit).

Every (sequence, step) to score gets a *slot* 1..S-1 inside its row; ``slot_ids[b, t]`` is the
slot of the token that position t predicts (targets are shifted inside each sequence, as in
atlas_jax.data.sequences), 0 where the target is not a scored step token. The device then
reduces per slot with one segment sum per metric. A sequence longer than T is cut to T tokens;
a step that loses any token is not scored and is reported as truncated.

Prefix sharing (``share_prefixes``): a trajectory's counterfactual variants begin with the same
tokens as its full sequence (the task context; for no_obs everything before the blanked
observation). The unit of packing is then a *tree*: the full sequence (the trunk) and, as
separate segments, each variant's tokens from its branch point on, with positions continuing
from there and attention to the trunk's first ``branch point`` positions
(atlas_jax.model.attention.SharedPrefix). The branch point is where the variant's tokens first
differ from the full sequence's, but at most one token before its first scored token (its first
prediction must come from its own segment), so every variant computes exactly what it would
alone, and a trajectory costs O(its tokens) instead of O(steps x tokens). A tree longer than
T (or with more scored steps than slots) is split: the branches with the deepest branch points
stay with the full sequence, the rest form further trees over an unscored copy of the trunk up
to their deepest branch point.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator, Sequence

import numpy as np

from atlas_jax.selection.variants import ScoreSequence

ROW_KEYS = ("input_ids", "target_ids", "positions", "segment_ids", "slot_ids", "prefix_segment_ids",
            "prefix_lengths")


@dataclasses.dataclass
class Row:
    length: int = 0
    parts: list = dataclasses.field(default_factory=list)  # (sequence index, kept end, [(slot, step)])
    slots: int = 0
    # per part: (first token held, index in ``parts`` of the part holding tokens [0, first), or -1)
    shares: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PackReport:
    sequences: int = 0
    tokens: int = 0  # real tokens placed in rows
    sequence_tokens: int = 0  # the sequences' kept tokens: what rows would hold without prefix sharing
    truncated_sequences: int = 0
    truncated_steps: list = dataclasses.field(default_factory=list)  # (sequence index, step)


@dataclasses.dataclass
class _Tree:
    parts: list  # (sequence index, first token held, kept end, scored steps, parent part or -1)
    length: int = 0
    slots: int = 0

    def add(self, i: int, first: int, keep: int, scored: list[int], parent: int = -1) -> None:
        self.parts.append((i, first, keep, scored, parent))
        self.length += keep - first
        self.slots += len(scored)


def _scored_steps(seq: ScoreSequence, keep: int) -> tuple[list[int], list[int]]:
    """(steps whose tokens all lie in the first ``keep`` tokens, steps that lose some)."""
    steps = np.unique(seq.step_ids_L[seq.step_ids_L >= 0]).tolist()
    cut = set(np.unique(seq.step_ids_L[keep:][seq.step_ids_L[keep:] >= 0]).tolist())
    return [s for s in steps if s not in cut], [s for s in steps if s in cut]


def branch_point(trunk_ids_L: np.ndarray, seq: ScoreSequence) -> int:
    """How many leading tokens ``seq`` can take from ``trunk``: their common prefix, but at most
    up to the position that predicts ``seq``'s first step token."""
    first = 1 + int(np.argmax(seq.step_ids_L[1:] >= 0))  # token 0 is never predicted
    n = min(len(trunk_ids_L), len(seq.token_ids_L), first - 1)
    differ = np.nonzero(trunk_ids_L[:n] != seq.token_ids_L[:n])[0]
    return int(differ[0]) if len(differ) else n


def _trunk_copy_tree(trunk: int, branches: list[tuple[int, int]], kept: dict) -> _Tree:
    """Branches over an unscored copy of the trunk's first (deepest branch point) tokens."""
    tree = _Tree([])
    tree.add(trunk, 0, max(first for first, _ in branches), [])
    for first, i in branches:
        tree.add(i, first, kept[i][0], kept[i][1], parent=0)
    return tree


def _trees(sequences: Sequence[ScoreSequence], kept: dict, seq_len: int, max_slots: int,
           share_prefixes: bool) -> list[_Tree]:
    """One tree per sequence, or (sharing) per trajectory plus the splits its budget needs."""
    full_of = {}
    if share_prefixes:
        for i, seq in enumerate(sequences):
            if seq.variant == "full":
                full_of.setdefault(seq.item_id, i)
    trees, branches = [], collections.defaultdict(list)  # trunk index -> [(branch point, sequence index)]
    for i, seq in enumerate(sequences):
        keep, scored = kept[i]
        trunk = full_of.get(seq.item_id, i)
        first = branch_point(sequences[trunk].token_ids_L, seq) if trunk != i and scored else 0
        if first > 0:
            branches[trunk].append((first, i))
        elif trunk == i or scored:  # a cut variant with nothing left to score costs nothing
            trees.append(_Tree([]))
            trees[-1].add(i, 0, keep, scored)
    for trunk, tree in [(t.parts[0][0], t) for t in trees if t.parts[0][0] in branches]:
        rest = []
        for first, i in sorted(branches[trunk], reverse=True):  # deepest first: they need the longest trunk
            keep, scored = kept[i]
            if tree.length + keep - first <= seq_len and tree.slots + len(scored) <= max_slots:
                tree.add(i, first, keep, scored, parent=0)
            else:
                rest.append((first, i))
        split, length, slots = [], 0, 0  # ascending branch points: a further tree's trunk copy ends at its last
        for first, i in sorted(rest):
            keep, scored = kept[i]
            if split and (first + length + (keep - first) > seq_len or slots + len(scored) > max_slots):
                trees.append(_trunk_copy_tree(trunk, split, kept))
                split, length, slots = [], 0, 0
            split.append((first, i))
            length, slots = length + keep - first, slots + len(scored)
        if split:
            trees.append(_trunk_copy_tree(trunk, split, kept))
    return trees


def pack(sequences: Sequence[ScoreSequence], seq_len: int, num_slots: int, open_rows: int = 64,
         share_prefixes: bool = False) -> tuple[list[Row], PackReport]:
    """Longest first, into rows of ``seq_len`` tokens and ``num_slots - 1`` slots each, with the
    training pipeline's packer (Grain's first-fit over ``open_rows`` open rows): a tree (a
    sequence, or with ``share_prefixes`` a trajectory's sequences sharing its prefix) is a
    "tokens" feature of its length and a "slots" feature of one entry per scored step, so both
    budgets hold per row."""
    import grain

    report = PackReport()
    kept = {}
    for i, seq in enumerate(sequences):
        keep = min(len(seq.token_ids_L), seq_len)
        scored, cut = _scored_steps(seq, keep)
        report.sequences += 1
        report.sequence_tokens += keep
        if keep < len(seq.token_ids_L):
            report.truncated_sequences += 1
            report.truncated_steps.extend((i, s) for s in cut)
        if len(scored) > num_slots - 1:
            raise ValueError(f"item_id={seq.item_id!r}: {len(scored)} steps in one sequence exceed "
                             f"{num_slots - 1} slots per row; raise num_slots")
        kept[i] = (keep, scored)
    trees = _trees(sequences, kept, seq_len, num_slots - 1, share_prefixes)
    report.tokens = sum(t.length for t in trees)
    order = sorted(range(len(trees)), key=lambda j: -trees[j].length)
    elements = [{"tokens": np.full(trees[j].length, j, np.int32), "slots": np.zeros(trees[j].slots, np.int32)}
                for j in order]
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
            tree = trees[int(out["tokens"][np.nonzero(segments_T == segment)[0][0]])]
            base = len(row.parts)
            for i, first, keep, scored, parent in tree.parts:
                row.parts.append((i, keep, [(row.slots + 1 + j, s) for j, s in enumerate(scored)]))
                row.shares.append((first, -1 if parent < 0 else base + parent))
                row.slots += len(scored)
            row.length += tree.length
        rows.append(row)
    return rows, report


def row_arrays(row: Row, sequences: Sequence[ScoreSequence], seq_len: int) -> dict[str, np.ndarray]:
    """The [T] arrays of one row (ROW_KEYS)."""
    out = {k: np.zeros(seq_len, np.int32) for k in ROW_KEYS}
    start = 0
    for segment, ((i, keep, slots), (first, parent)) in enumerate(zip(row.parts, row.shares, strict=True), start=1):
        seq = sequences[i]
        ids_L, steps_L = seq.token_ids_L[first:keep], seq.step_ids_L[first:keep]
        end = start + keep - first
        out["input_ids"][start:end] = ids_L
        out["target_ids"][start:end - 1] = ids_L[1:]
        out["positions"][start:end] = np.arange(first, keep)
        out["segment_ids"][start:end] = segment
        if parent >= 0:  # sees the parent segment's first `first` tokens: its own tokens [0, first)
            out["prefix_segment_ids"][start:end] = parent + 1
            out["prefix_lengths"][start:end] = first
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
