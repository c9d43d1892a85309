"""The row length of `atlas-jax score`: by default one that covers the data, else a loud count of
what the given one cuts.

A step whose sequence is cut to ``seq_len`` gets null scores, and ``select`` then treats it as
unscored, so a too-short ``--seq-len`` silently weakens the selection. The default is the longest
trajectory (its full conversation, the longest sequence the pass runs: each counterfactual is a
shortened copy of it) rounded up to a multiple of ROUND_TO, capped by the model's
``max_position_embeddings``. Measuring costs one tokenization of each trajectory, no model call.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from atlas_jax.data.spans import encode_steps
from atlas_jax.data.trajectory import Trajectory

ROUND_TO = 256


@dataclasses.dataclass(frozen=True)
class TrajectoryLength:
    tokens: int  # of the full conversation
    step_ends: tuple[int, ...]  # per step: the position of its last token (-1: a step without tokens)


@dataclasses.dataclass(frozen=True)
class Cut:
    trajectories: int  # cut by seq_len
    steps: int  # steps that lose tokens: their scores are null
    total_trajectories: int
    total_steps: int
    longest: int


def measure(trajectories: Sequence[Trajectory], tokenizer: Any, span_method: str = "auto",
            chat_template: str | None = None) -> list[TrajectoryLength]:
    """Token count and step end positions of each trajectory's full conversation."""
    out = []
    for traj in trajectories:
        ids_L, steps_L = encode_steps(tokenizer, traj.messages(), method=span_method, chat_template=chat_template,
                                      where=f"{traj.source} item_id={traj.item_id!r}")
        ends = [-1] * traj.num_steps
        for position, step in enumerate(steps_L.tolist()):
            if step >= 0:
                ends[step] = position
        out.append(TrajectoryLength(len(ids_L), tuple(ends)))
    return out


def cut_by(lengths: Sequence[TrajectoryLength], seq_len: int) -> Cut:
    """What rows of ``seq_len`` tokens cut: a step is scored only when all its tokens fit."""
    return Cut(trajectories=sum(t.tokens > seq_len for t in lengths),
               steps=sum(end >= seq_len for t in lengths for end in t.step_ends),
               total_trajectories=len(lengths), total_steps=sum(len(t.step_ends) for t in lengths),
               longest=max((t.tokens for t in lengths), default=0))


def default_seq_len(lengths: Sequence[TrajectoryLength], chunk: int, max_positions: int | None) -> int:
    """The longest trajectory rounded up to a multiple of ROUND_TO (and of the logits chunk), at
    most ``max_positions`` rounded down to such a multiple (or to the chunk)."""
    step = math.lcm(ROUND_TO, chunk)
    need = max(step, -(-max((t.tokens for t in lengths), default=1) // step) * step)
    if max_positions is None or need <= max_positions:
        return need
    return max_positions // step * step or max(max_positions // chunk * chunk, chunk)


def model_max_positions(model_dir: str) -> int | None:
    """``max_position_embeddings`` from MODEL's config files (no weights read); None when MODEL is
    neither kind of model directory (loading it reports that)."""
    from atlas_jax.convert.checkpoint import is_checkpoint_dir, is_hf_dir, read_model_config
    from atlas_jax.model import ModelConfig

    if is_checkpoint_dir(model_dir):
        return read_model_config(model_dir).max_position_embeddings
    if is_hf_dir(model_dir):
        return ModelConfig.from_hf_dir(model_dir).max_position_embeddings
    return None


def choose_seq_len(given: int | None, lengths: Sequence[TrajectoryLength], chunk: int,
                   max_positions: int | None) -> tuple[int, str, str | None]:
    """(seq_len, what was chosen and why, a warning when it cuts steps or None)."""
    covering = default_seq_len(lengths, chunk, None)
    seq_len = given if given is not None else default_seq_len(lengths, chunk, max_positions)
    cut = cut_by(lengths, seq_len)
    if given is not None:
        chose = f"seq-len: {seq_len} (--seq-len; the longest trajectory has {cut.longest} tokens)"
    else:
        chose = (f"seq-len: {seq_len} (default: covers the longest trajectory, {cut.longest} tokens, "
                 f"rounded up to a multiple of {math.lcm(ROUND_TO, chunk)}"
                 + (f"; capped by the model's max_position_embeddings {max_positions})" if seq_len < covering else ")"))
    if not cut.steps:  # a cut after the last step loses no score
        return seq_len, chose, None
    why = ("--seq-len" if given is not None else f"the model's max_position_embeddings ({max_positions})")
    fix = (f"; omit --seq-len to cover the data ({covering})" if given is not None and
           (max_positions is None or covering <= max_positions) else "")
    warning = (f"WARNING: {why} cuts {cut.trajectories} of {cut.total_trajectories} trajectories to {seq_len} tokens "
               f"(the longest has {cut.longest}): {cut.steps} of {cut.total_steps} steps lose tokens and get null "
               f"scores, which select treats as unscored{fix}")
    return seq_len, chose, warning


def null_steps(records: Sequence[dict]) -> tuple[int, int]:
    """(steps whose scores are null because their sequence was cut, all steps) in scores records."""
    steps = [s for r in records for s in r["steps"]]
    return sum(bool(s.get("truncated")) for s in steps), len(steps)
