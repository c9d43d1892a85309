"""Experts that replay an environment's gold action sequence (SciWorld, TextWorldExpress);
each subclass only says why, in a Thought, it takes the next gold action."""
from __future__ import annotations

from typing import Sequence

from atlas_jax.envs.base import ExpertFailed, TextEnv, format_response


class GoldPathExpert:
    """``act(observation) -> response`` following ``actions`` in order."""

    def __init__(self, env: TextEnv, actions: Sequence[str]):
        if len(actions) > env.max_steps:
            raise ExpertFailed("gold path longer than the step limit", f"{len(actions)} > {env.max_steps}")
        self.env = env
        self.actions = list(actions)
        self.position = 0

    def thought(self, action: str, observation: str) -> str:
        raise NotImplementedError

    def act(self, observation: str) -> str:
        if self.position >= len(self.actions):
            raise ExpertFailed("gold path did not finish the task")
        action = self.actions[self.position]
        thought = self.thought(action, observation)
        self.position += 1
        return format_response(thought, action)
