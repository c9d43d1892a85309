"""Run an expert over task indices; keep the successful episodes as AgentTraj-L records.

Experts never err, so without help no trajectory would show ATLaS's self-correction. In one
episode of every ``MISTAKE_PERIOD`` (chosen by task index, so regeneration stays bit-for-bit)
an expert with the hooks ``mistake`` and ``recovery`` makes one plausible wrong action that
the environment rejects without changing its state; the next Thought names the failure and
how the expert recovers, then the normal plan goes on. If the extra step would cost the
episode its success (the step limit), the episode is played again without the mistake.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator

from atlas_jax.envs.base import ExpertFailed, TextEnv, format_response
from atlas_jax.envs.registry import make_expert

MISTAKE_PERIOD = 3


def plans_mistake(task_index: int) -> bool:
    """Whether the expert tries one recoverable mistake in this task's episode."""
    return task_index % MISTAKE_PERIOD == 0


@dataclasses.dataclass
class ExpertReport:
    env: str
    attempted: int = 0
    kept: int = 0
    recovered: int = 0  # kept episodes with a mistake and its recovery
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def lines(self) -> list[str]:
        out = [f"{self.env}: attempted {self.attempted}, kept {self.kept} ({self.recovered} with a recovered "
               f"mistake), dropped {self.attempted - self.kept}"]
        out += [f"  dropped {n}: {reason}" for reason, n in self.dropped.most_common()]
        return out


class Recovering:
    """Wraps an expert: one wrong action at the first turn its ``mistake`` hook offers one,
    then the expert's next step with the ``recovery`` sentence put before its Thought.

    Hooks: ``mistake(observation) -> (thought, action) | None`` (an action the env rejects,
    state unchanged), ``recovery(action, observation) -> str`` (``observation`` is the env's
    answer to it) and ``respond(observation) -> (thought, action)`` (the normal step)."""

    def __init__(self, expert):
        self.expert = expert
        self.made = False
        self.pending: str | None = None  # the wrong action whose failure is yet to be addressed

    def act(self, observation: str) -> str:
        if not self.made:
            mistake = self.expert.mistake(observation)
            if mistake is not None:
                self.made, self.pending = True, mistake[1]
                return format_response(*mistake)
        thought, action = self.expert.respond(observation)
        if self.pending is not None:
            thought = f"{self.expert.recovery(self.pending, observation)} {thought}"
            self.pending = None
        return format_response(thought, action)


def _play(env: TextEnv, task_index: int, mistake: bool) -> bool:
    """One expert episode; whether a mistake was made in it. ExpertFailed if not successful."""
    observation = env.reset(task_index)
    expert = make_expert(env.name, env)
    policy = Recovering(expert) if mistake and hasattr(expert, "mistake") else expert
    try:
        while not env.done:
            result = env.step(policy.act(observation))
            observation = result.observation
        if not env.success:
            why = "step limit reached" if len(env.turns) >= env.max_steps else "episode ended without success"
            raise ExpertFailed(why, f"{env.name}_{task_index}")
    except ExpertFailed:
        if policy is expert or not policy.made:
            raise
        return _play(env, task_index, mistake=False)  # the mistake did not fit: skip it
    return policy is not expert and policy.made


def run_expert_episode(env: TextEnv, task_index: int, mistakes: bool = True,
                       report: ExpertReport | None = None) -> dict:
    """Play the expert on one task; the episode's record, or ExpertFailed saying why not.
    ``mistakes=False`` never injects a mistake (the plain expert)."""
    made = _play(env, task_index, mistakes and plans_mistake(task_index))
    if report is not None:
        report.recovered += made
    return env.to_record()


def generate(env: TextEnv, task_indices: list[int], report: ExpertReport, progress=None) -> Iterator[dict]:
    """Records of the successful expert episodes, in task-index order; ``report`` counts the rest."""
    for task_index in task_indices:
        report.attempted += 1
        try:
            record = run_expert_episode(env, task_index, report=report)
        except ExpertFailed as e:
            report.dropped[e.reason] += 1
        else:
            report.kept += 1
            yield record
        if progress is not None:
            progress.update(1)
            progress.set_postfix(kept=report.kept)
