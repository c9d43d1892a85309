"""Evaluate a policy in an environment: per-episode JSONL and a per-environment summary.

Success rate, mean reward (each episode's last reward: the env's final score), AgentGym's score
(mean final reward x the env's ``score_scale``: 100 for rewards in [0, 1], 1 for SciWorld's 0-100
score as AgentGym's client reports it) and mean turns are over all episodes attempted, so an episode that ended in
context overflow, an unparsable response or an env error counts as a failure, and the
summary says how many ended each way.

The per-episode JSONL is in task order. Several processes (a pod, a SLURM job) split the episodes,
each playing its share with its own model replica; finished episodes are saved as they end
(``OUT.parts/``, atlas_jax.multihost_split), so a killed run's next attempt plays only the rest, and
process 0 writes the JSONL and the summary: the same files as one process playing them all.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
from typing import Callable, Iterable, Iterator, Sequence

from etils import epath

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

    def add(self, record: dict) -> None:
        """One episode, as its JSONL record (Episode.record())."""
        self.episodes += 1
        self.successes += record["success"]
        self.reward_sum += record["reward"]
        self.turns_sum += record["turns"]
        self.end_reasons[record["end_reason"]] += 1
        self.unparsable += record["unparsable"]
        self.invalid_actions += record["invalid_actions"]
        self.truncated_responses += record["truncated_responses"]
        self.generated_tokens += record["generated_tokens"]

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
             success_rule: str | None = None, run: dict | None = None) -> EnvSummary | None:
    """Run the first ``episodes`` tasks of ``split`` (after ``skip``), or ``task_indices``; JSONL to
    ``out_path`` in task order. ``score_scale`` / ``success_rule`` default to the env's attributes.
    With several JAX processes every one calls this (``out_path`` required) and plays its share;
    process 0 gets the summary, the others None. ``run``: the options that make two attempts'
    episodes comparable (a killed run's saved episodes are reused only under the same ones)."""
    import jax

    from atlas_jax.multihost_split import Parts, balanced_shares

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
    task_indices = list(task_indices)
    summary = EnvSummary(env_name, split, score_scale=score_scale, protocol=protocol, success_rule=success_rule)
    index, count = jax.process_index(), jax.process_count()
    play = functools.partial(_play, make_env, task_indices, policy, batch_size=batch_size, split=split,
                             on_unparsable=on_unparsable, progress=progress)
    if out_path is None:
        if count > 1:
            raise ValueError("evaluate: several processes need out_path (their episodes meet beside it)")
        for _, record in sorted(play(range(len(task_indices)))):
            summary.add(record)
        return summary
    parts = Parts(out_path, run={**(run or {}), "env": env_name, "split": split, "tasks": task_indices},
                  process_index=index, process_count=count)
    done = parts.start()
    mine = balanced_shares([1] * len(task_indices), count, skip=done)[index]  # episodes cost alike: round robin
    for position, record in play(mine):
        parts.save([(position, record)])  # as episodes finish, so a killed run keeps what it did
    records = parts.merge(len(task_indices), _write_jsonl)
    if records is None:
        return None
    for record in records:
        summary.add(record)
    return summary


def _play(make_env, task_indices, policy, positions, **options) -> Iterator[tuple[int, dict]]:
    """(position in ``task_indices``, episode record) for ``positions``, in finishing order."""
    waiting = collections.defaultdict(collections.deque)  # task index -> its positions (a task may repeat)
    for p in positions:
        waiting[task_indices[p]].append(p)
    for episode in run_episodes(make_env, [task_indices[p] for p in positions], policy, **options):
        yield waiting[episode.task_index].popleft(), episode.record()


def _write_jsonl(path: str, records: list[dict]) -> None:
    with atomic_write(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


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
    """``summary.json`` and ``summary.md`` in ``out_dir`` (each written whole or not at all); returns the table."""
    table = summary_table(summaries)
    with atomic_write(epath.Path(out_dir) / "summary.json") as f:
        json.dump({"environments": [s.to_json() for s in summaries], **(extra or {})}, f, indent=2)
        f.write("\n")
    with atomic_write(epath.Path(out_dir) / "summary.md") as f:
        f.write(table + "\n")
    return table
