"""Run an expert over task indices; keep the successful episodes as AgentTraj-L records."""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator

from atlas_jax.envs.base import ExpertFailed, TextEnv
from atlas_jax.envs.registry import make_expert


@dataclasses.dataclass
class ExpertReport:
    env: str
    attempted: int = 0
    kept: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def lines(self) -> list[str]:
        out = [f"{self.env}: attempted {self.attempted}, kept {self.kept}, dropped {self.attempted - self.kept}"]
        out += [f"  dropped {n}: {reason}" for reason, n in self.dropped.most_common()]
        return out


def run_expert_episode(env: TextEnv, task_index: int) -> dict:
    """Play the expert on one task; the episode's record, or ExpertFailed saying why not."""
    observation = env.reset(task_index)
    expert = make_expert(env.name, env)
    while not env.done:
        result = env.step(expert.act(observation))
        observation = result.observation
    if not env.success:
        why = "step limit reached" if len(env.turns) >= env.max_steps else "episode ended without success"
        raise ExpertFailed(why, f"{env.name}_{task_index}")
    return env.to_record()


def generate(env: TextEnv, task_indices: list[int], report: ExpertReport, progress=None) -> Iterator[dict]:
    """Records of the successful expert episodes, in task-index order; ``report`` counts the rest."""
    for task_index in task_indices:
        report.attempted += 1
        try:
            record = run_expert_episode(env, task_index)
        except ExpertFailed as e:
            report.dropped[e.reason] += 1
        else:
            report.kept += 1
            yield record
        if progress is not None:
            progress.update(1)
            progress.set_postfix(kept=report.kept)
