"""The token sequences the scoring pass runs: each trajectory in full, plus two counterfactuals per step.

- ``full``: the whole conversation; every step is scored in one sequence (causal attention
  means step k sees exactly its history).
- ``prompt_only`` (step k): [system] + task prompt + step k alone. The IFD-style ratio is
  nll_mean(full) / nll_mean(prompt_only): below 1 when the history makes the step easier.
- ``no_obs`` (step k >= 1): the conversation up to step k with the observation right before
  step k blanked (content ""), so the template keeps its user/assistant alternation (Mistral's
  template rejects two assistant turns in a row). Observation dependence is
  nll_mean(no_obs) - nll_mean(full): positive when the step relies on what it just saw.
  Step 0 follows the task prompt, not an observation: it has no no_obs variant.

Step tokens come from atlas_jax.data.spans (the same definition training uses); each
counterfactual sequence marks only its own step, numbered as in the original trajectory.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from atlas_jax.data.spans import encode_steps
from atlas_jax.data.trajectory import Trajectory

VARIANTS = ("full", "prompt_only", "no_obs")


@dataclasses.dataclass(frozen=True)
class ScoreSequence:
    item_id: str
    variant: str  # one of VARIANTS
    token_ids_L: np.ndarray  # int32[L]
    step_ids_L: np.ndarray  # int32[L]: original step index of each scored token, -1 elsewhere


def prompt_only_messages(traj: Trajectory, step: int) -> list[dict[str, str]]:
    turns = traj.turns
    head = [t for t in turns[:1] if t.role == "system"]
    task = next(t for t in turns if t.role == "user")
    chosen = traj.step_turns[step]
    return [{"role": t.role, "content": t.content} for t in head + [task, chosen]]


def no_obs_messages(traj: Trajectory, step: int) -> list[dict[str, str]]:
    """Turns up to and including step ``step`` (>= 1) with the preceding observation blanked."""
    if step < 1:
        raise ValueError("step 0 has no preceding observation")
    messages, seen = [], -1
    for turn in traj.turns:
        messages.append({"role": turn.role, "content": turn.content})
        if turn.role == "assistant":
            seen += 1
            if seen == step:
                break
    # turns alternate (trajectory.py enforces it), so the turn before step k is its observation
    messages[-2] = {"role": "user", "content": ""}
    return messages


def _only_last_step(step_ids_L: np.ndarray, step: int) -> np.ndarray:
    last = int(step_ids_L.max())
    return np.where(step_ids_L == last, step, -1).astype(np.int32)


def trajectory_sequences(traj: Trajectory, tokenizer: Any, variants: tuple[str, ...] = VARIANTS, *,
                         span_method: str = "auto", chat_template: str | None = None) -> Iterator[ScoreSequence]:
    """Every sequence to score for ``traj``: its full form first, then the counterfactuals per step."""
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown score variants {sorted(unknown)}; expected a subset of {VARIANTS}")
    where = f"{traj.source} item_id={traj.item_id!r}"

    def encode(messages):
        return encode_steps(tokenizer, messages, method=span_method, chat_template=chat_template, where=where)

    ids_L, steps_L = encode(traj.messages())
    yield ScoreSequence(traj.item_id, "full", ids_L, steps_L)
    for k in range(traj.num_steps):
        if "prompt_only" in variants:
            ids_L, steps_L = encode(prompt_only_messages(traj, k))
            yield ScoreSequence(traj.item_id, "prompt_only", ids_L, _only_last_step(steps_L, k))
        if "no_obs" in variants and k >= 1:
            ids_L, steps_L = encode(no_obs_messages(traj, k))
            yield ScoreSequence(traj.item_id, "no_obs", ids_L, _only_last_step(steps_L, k))
