"""Batched agent episodes: a policy answers every live episode at once, then each env steps.

An episode's conversation is what the agent saw, in AgentGym's layout (the same as the
AgentTraj-L records it was trained on): the instruction, the fixed acknowledgement, the first
observation, then assistant responses and observations. A policy gets the live episodes and
returns one :class:`Reply` each; a fixed set of environment slots (one env instance each, reset
per task) runs the episodes, and a finished slot takes the next task, so the policy's batch
stays full until the task list runs out.

An episode ends with one ``end_reason``: ``success``, ``failed`` (the env ended it),
``step_limit``, ``context_overflow`` (the next prompt would not fit the model's context),
``unparsable`` (a response without ``Action:``, when ``on_unparsable="end"``) or
``env_error`` (reset or step raised). None of these stops the run; all are counted.
"""
from __future__ import annotations

import dataclasses
import traceback
from typing import Callable, Iterator, Protocol, Sequence

from atlas_jax.envs.base import TextEnv, instruction_turns, parse_action

END_REASONS = ("success", "failed", "step_limit", "context_overflow", "unparsable", "env_error")


@dataclasses.dataclass
class Reply:
    text: str
    overflow: bool = False  # the prompt did not fit: no text was generated
    stopped: bool = True  # ended at a stop token (False: cut at the new-token limit)
    num_tokens: int = 0


@dataclasses.dataclass
class Episode:
    env: str
    task_index: int
    split: str
    messages: list[dict] = dataclasses.field(default_factory=list)  # role/content, as the agent saw them
    turns: int = 0  # env steps taken
    reward: float = 0.0  # the last step's reward (the env's final score)
    success: bool = False
    end_reason: str | None = None
    error: str | None = None
    unparsable: int = 0
    invalid_actions: int = 0
    truncated_responses: int = 0
    generated_tokens: int = 0

    @property
    def item_id(self) -> str:
        return f"{self.env}_{self.task_index}"

    def finish(self, reason: str, error: str | None = None) -> None:
        self.end_reason, self.error = reason, error

    def record(self) -> dict:
        """One JSONL line: outcome, counters and the conversation (AgentTraj-L turns)."""
        role_to_from = {"user": "human", "assistant": "gpt", "system": "system"}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "messages"}
        out = {"item_id": self.item_id, **out}
        out["conversations"] = [{"from": role_to_from[m["role"]], "value": m["content"]} for m in self.messages]
        return out


class Policy(Protocol):
    def respond(self, episodes: Sequence[Episode]) -> list[Reply]:
        ...


def _start(env: TextEnv, episode: Episode) -> None:
    try:
        observation = env.reset(episode.task_index)
    except Exception as e:  # noqa: BLE001 - any env failure ends this episode, not the run
        episode.finish("env_error", f"reset: {type(e).__name__}: {e}")
        return
    episode.messages = [*conversation_start(env), {"role": "user", "content": observation}]


def conversation_start(env: TextEnv) -> list[dict]:
    """The turns before the first observation: the env's own (a remote AgentGym protocol sets
    ``conversation_start``), else the instruction and AgentGym's acknowledgement."""
    start = getattr(env, "conversation_start", None)
    if start:
        return [dict(m) for m in start]
    return instruction_turns(env.instruction)


def _advance(env: TextEnv, episode: Episode, reply: Reply, on_unparsable: str) -> None:
    """Apply one reply; sets ``end_reason`` when the episode is over."""
    if reply.overflow:
        episode.finish("context_overflow")
        return
    episode.generated_tokens += reply.num_tokens
    episode.truncated_responses += not reply.stopped
    episode.messages.append({"role": "assistant", "content": reply.text})
    if parse_action(reply.text) is None:
        episode.unparsable += 1
        if on_unparsable == "end":
            episode.finish("unparsable")
            return
    try:
        result = env.step(reply.text)
    except Exception as e:  # noqa: BLE001
        episode.finish("env_error", f"step: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
        return
    episode.turns += 1
    episode.reward = float(result.reward)
    episode.invalid_actions += bool(result.info.get("invalid"))
    episode.messages.append({"role": "user", "content": result.observation})
    if result.success:
        episode.success = True
        episode.finish("success")
    elif result.done:
        episode.finish("step_limit" if result.info.get("truncated") else "failed")


def run_episodes(make_env: Callable[[], TextEnv], task_indices: Sequence[int], policy: Policy, *,
                 batch_size: int, split: str = "", on_unparsable: str = "end",
                 progress: Callable[[Episode], None] | None = None) -> Iterator[Episode]:
    """Play every task once; yields finished episodes (in finishing order)."""
    if on_unparsable not in ("end", "continue"):
        raise ValueError(f"on_unparsable={on_unparsable!r}; expected 'end' or 'continue'")
    pending = list(task_indices)[::-1]
    slots: list[TextEnv] = []
    live: dict[int, Episode] = {}  # slot -> episode

    def fill(slot: int) -> Iterator[Episode]:
        """Start tasks in ``slot`` until one is live (an env_error at reset finishes at once)."""
        while pending:
            env = slots[slot]
            episode = Episode(env.name, pending.pop(), split)
            _start(env, episode)
            if episode.end_reason is None:
                live[slot] = episode
                return
            yield episode

    try:
        for slot in range(min(batch_size, len(pending))):
            slots.append(make_env())
            yield from _report(fill(slot), progress)
        while live:
            order = sorted(live)
            replies = policy.respond([live[s] for s in order])
            if len(replies) != len(order):
                raise RuntimeError(f"policy returned {len(replies)} replies for {len(order)} episodes")
            for slot, reply in zip(order, replies):
                episode = live[slot]
                _advance(slots[slot], episode, reply, on_unparsable)
                if episode.end_reason is not None:
                    del live[slot]
                    yield from _report(iter([episode]), progress)
                    yield from _report(fill(slot), progress)
    finally:
        for env in slots:
            env.close()


def _report(episodes: Iterator[Episode], progress) -> Iterator[Episode]:
    for episode in episodes:
        if progress is not None:
            progress(episode)
        yield episode
