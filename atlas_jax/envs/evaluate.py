"""Evaluate a policy in an environment: per-episode JSONL and a per-environment summary.

Success rate, mean reward (each episode's last reward: the env's final score), AgentGym's score
(mean final reward x the env's ``score_scale``: 100 for rewards in [0, 1], 1 for SciWorld's 0-100
score as AgentGym's client reports it) and mean turns are over all episodes attempted, so an episode that ended in
context overflow, an unparsable response or an env error counts as a failure, and the
summary says how many ended each way.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
from typing import Callable, Iterable, Sequence

from atlas_jax import paths
from atlas_jax.envs.agentgym_protocol import PROTOCOLS
from atlas_jax.envs.agent_loop import END_REASONS, Episode, Policy, run_episodes
from atlas_jax.envs.base import TextEnv
from atlas_jax.outputs import atomic_write


@dataclasses.dataclass
class EnvSummary:
    env: str
    split: str
    episodes: int = 0
    successes: int = 0
    reward_sum: float = 0.0
    turns_sum: int = 0
    end_reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unparsable: int = 0
    invalid_actions: int = 0
    truncated_responses: int = 0
    generated_tokens: int = 0
    score_scale: float = 100.0
    protocol: str = ""  # how the episodes were played (in-process env or an AgentGym server)
    success_rule: str = ""

    def add(self, episode: Episode) -> None:
        self.episodes += 1
        self.successes += episode.success
        self.reward_sum += episode.reward
        self.turns_sum += episode.turns
        self.end_reasons[episode.end_reason] += 1
        self.unparsable += episode.unparsable
        self.invalid_actions += episode.invalid_actions
        self.truncated_responses += episode.truncated_responses
        self.generated_tokens += episode.generated_tokens

    def _mean(self, total: float) -> float:
        return total / self.episodes if self.episodes else 0.0

    @property
    def success_rate(self) -> float:
        return self._mean(self.successes)

    @property
    def mean_reward(self) -> float:
        return self._mean(self.reward_sum)

    @property
    def score(self) -> float:
        """AgentGym's (and the paper's) score: mean final reward x score_scale."""
        return self.mean_reward * self.score_scale

    @property
    def mean_turns(self) -> float:
        return self._mean(self.turns_sum)

    def to_json(self) -> dict:
        return {"env": self.env, "split": self.split, "episodes": self.episodes, "successes": self.successes,
                "success_rate": self.success_rate, "score": self.score, "mean_reward": self.mean_reward,
                "score_scale": self.score_scale, "protocol": self.protocol, "success_rule": self.success_rule, "mean_turns": self.mean_turns,
                "end_reasons": {r: self.end_reasons.get(r, 0) for r in END_REASONS},
                "unparsable_responses": self.unparsable, "invalid_actions": self.invalid_actions,
                "truncated_responses": self.truncated_responses, "generated_tokens": self.generated_tokens}


def evaluate(env_name: str, make_env: Callable[[], TextEnv], policy: Policy, *, episodes: int, split: str = "eval",
             skip: int = 0, batch_size: int = 8, on_unparsable: str = "end", out_path: str | None = None,
             progress: Callable[[Episode], None] | None = None, task_indices: Sequence[int] | None = None,
             protocol: str = "in-process", score_scale: float | None = None,
             success_rule: str | None = None) -> EnvSummary:
    """Run the first ``episodes`` tasks of ``split`` (after ``skip``), or ``task_indices``;
    JSONL to ``out_path``. ``score_scale`` / ``success_rule`` default to the env's attributes."""
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    if task_indices is None or score_scale is None:
        probe = make_env()
        try:
            if task_indices is None:
                task_indices = probe.task_indices(split, episodes, start=skip)
            score_scale = float(getattr(probe, "score_scale", 100.0)) if score_scale is None else score_scale
        finally:
            probe.close()
    if success_rule is None:
        success_rule = PROTOCOLS[env_name].success_rule if env_name in PROTOCOLS else "the environment's success flag"
    if not task_indices:
        raise ValueError(f"{env_name}: no task indices in split {split!r} after skipping {skip}")
    summary = EnvSummary(env_name, split, score_scale=score_scale, protocol=protocol, success_rule=success_rule)
    with paths.streamed_write(out_path) if out_path else contextlib.nullcontext() as sink:
        for episode in run_episodes(make_env, task_indices, policy, batch_size=batch_size, split=split,
                                    on_unparsable=on_unparsable, progress=progress):
            summary.add(episode)
            if sink is not None:  # written as episodes finish, so an interrupted run keeps what it did
                sink.write(json.dumps(episode.record(), ensure_ascii=False) + "\n")
                sink.flush()
    return summary


def summary_table(summaries: Iterable[EnvSummary]) -> str:
    """A Markdown table: one row per environment, then how each was played and judged."""
    summaries = list(summaries)
    header = ("| env | split | episodes | success rate | score | mean reward | mean turns | ended: success / failed / "
              "step limit / overflow / unparsable / env error |")
    lines = [header, "|" + "---|" * 8]
    for s in summaries:
        ends = " / ".join(str(s.end_reasons.get(r, 0)) for r in END_REASONS)
        lines.append(f"| {s.env} | {s.split} | {s.episodes} | {s.success_rate:.3f} | {s.score:.2f} | {s.mean_reward:.3f} | "
                     f"{s.mean_turns:.2f} | {ends} |")
    lines += [f"\n{s.env}: {s.protocol}; success = {s.success_rule}; score = mean final reward x {s.score_scale:g}"
              for s in summaries]
    return "\n".join(lines)


def write_summary(out_dir: str, summaries: list[EnvSummary], extra: dict | None = None) -> str:
    """``summary.json`` and ``summary.md`` in ``out_dir``; returns the table."""
    table = summary_table(summaries)
    with atomic_write(paths.Path(out_dir) / "summary.json") as f:
        json.dump({"environments": [s.to_json() for s in summaries], **(extra or {})}, f, indent=2)
        f.write("\n")
    with atomic_write(paths.Path(out_dir) / "summary.md") as f:
        f.write(table + "\n")
    return table
