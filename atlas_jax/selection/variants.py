"""The token sequences the scoring pass runs: each trajectory in full, plus two counterfactuals per step.

Counterfactuals exist for trainable steps only (atlas_jax.data.trajectory defines them and the
task context); a ``loss: false`` step such as AgentGym's acknowledgement is context, scored in the
full sequence but never rewritten.

- ``full``: the whole conversation; every step is scored in one sequence (causal attention
  means step k sees exactly its history).
- ``prompt_only`` (step k): the task context + step k alone. In AgentGym's layout the task
  context is instruction, acknowledgement and the first observation, which carries the goal, so
  the denominator sees the goal. The IFD-style ratio is nll_mean(full) / nll_mean(prompt_only):
  below 1 when the history makes the step easier; exactly 1 for the first trainable step.
- ``no_obs`` (step k): the conversation up to step k with the observation right before step k
  blanked (content ""), so the template keeps its user/assistant alternation (Mistral's template
  rejects two assistant turns in a row). Observation dependence is nll_mean(no_obs) - nll_mean(full):
  positive when the step relies on what it just saw. The first trainable step follows the task
  context (the goal), not an observation: it has no no_obs variant, and the goal is never blanked.

Step tokens come from atlas_jax.data.spans (the same definition training uses); each
counterfactual sequence marks only its own step, numbered as in the original trajectory, and is
tokenized from where it stops sharing the full conversation's text (same ids as tokenizing it whole).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from atlas_jax.data.spans import encode_conversation
from atlas_jax.data.trajectory import Trajectory

VARIANTS = ("full", "prompt_only", "no_obs")


@dataclasses.dataclass(frozen=True)
class ScoreSequence:
    item_id: str
    variant: str  # one of VARIANTS
    token_ids_L: np.ndarray  # int32[L]
    step_ids_L: np.ndarray  # int32[L]: original step index of each scored token, -1 elsewhere


def _messages(turns) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def _check_trainable(traj: Trajectory, step: int) -> None:
    if step not in traj.trainable_steps:
        raise ValueError(f"item_id={traj.item_id!r}: step {step} is not a trainable step "
                         f"(trainable: {list(traj.trainable_steps)})")


def prompt_only_messages(traj: Trajectory, step: int) -> list[dict[str, str]]:
    """The task context followed by trainable step ``step`` alone."""
    _check_trainable(traj, step)
    return _messages(traj.task_context + (traj.step_turns[step],))


def has_observation(traj: Trajectory, step: int) -> bool:
    """Whether ``step`` has a no_obs variant: a trainable step right after an observation."""
    return step in traj.trainable_steps and traj.observation_turn(step) is not None


def no_obs_messages(traj: Trajectory, step: int) -> list[dict[str, str]]:
    """Turns up to and including step ``step`` with the observation right before it blanked."""
    _check_trainable(traj, step)
    obs = traj.observation_turn(step)
    if obs is None:
        raise ValueError(f"item_id={traj.item_id!r}: step {step} follows the task context, not an observation")
    messages = _messages(traj.turns[:traj.step_turn_indices[step] + 1])
    messages[obs] = {"role": "user", "content": ""}
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

    ids_L, steps_L, full = encode_conversation(tokenizer, traj.messages(), method=span_method,
                                               chat_template=chat_template, where=where)
    yield ScoreSequence(traj.item_id, "full", ids_L, steps_L)

    def encode(messages):  # only the step's own tokens are scored; the shared beginning's tokens are reused
        ids_L, steps_L, _ = encode_conversation(tokenizer, messages, method=span_method, chat_template=chat_template,
                                                where=where, last_only=True, known=full)
        return ids_L, steps_L

    for k in traj.trainable_steps:
        if "prompt_only" in variants:
            ids_L, steps_L = encode(prompt_only_messages(traj, k))
            yield ScoreSequence(traj.item_id, "prompt_only", ids_L, _only_last_step(steps_L, k))
        if "no_obs" in variants and has_observation(traj, k):
            ids_L, steps_L = encode(no_obs_messages(traj, k))
            yield ScoreSequence(traj.item_id, "no_obs", ids_L, _only_last_step(steps_L, k))
