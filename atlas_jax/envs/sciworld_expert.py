"""SciWorld expert: the package's gold action path, each action with a Thought saying why.

Gold paths longer than the step limit are dropped before playing; paths that do not
reproduce (score below 100 at the end) are dropped by the expert runner.
"""
from __future__ import annotations

from atlas_jax.envs.gold_path import GoldPathExpert
from atlas_jax.envs.sciworld import SciWorldEnv


def _task_sentence(first_observation: str) -> str:
    for line in first_observation.splitlines():
        if line.startswith("Your task is to"):
            return line.split(". ")[0].rstrip(".")
    return "Your task is to complete the given task"


def _why(action: str) -> str:
    verb, _, rest = action.partition(" ")
    if action.startswith("open door to "):
        return f"The door to the {action[13:]} is closed; I open it so I can go there."
    if action.startswith("go to "):
        return f"What I need is not here, so I go to the {action[6:]}."
    if action == "look around":
        return "I look around to see what this room contains."
    if action.startswith("focus on "):
        return f"The {action[9:]} is the object my task is about, so I focus on it."
    if action.startswith("pick up "):
        return f"I will need the {action[8:]}, so I pick it up."
    if action.startswith(("move ", "pour ", "dunk ")):
        return f"To set up the experiment I {action}."
    if verb in ("activate", "deactivate"):
        return f"I {action} to change the conditions the task depends on."
    if verb in ("wait", "wait1"):
        return "The process needs time to take effect, so I wait."
    if verb in ("look", "read"):
        return f"I {action} to learn what I need to know next."
    if verb in ("connect", "disconnect"):
        return f"I {action} to build the circuit."
    if action.isdigit():
        return "My last command was ambiguous; I choose the intended option."
    return f"Next, I {action}."


class SciWorldExpert(GoldPathExpert):
    """Follows the gold path of the current task."""

    def __init__(self, env: SciWorldEnv):
        super().__init__(env, env.gold_actions())

    def thought(self, action: str, observation: str) -> str:
        why = _why(action)
        if self.position == 0:
            task = _task_sentence(self.env.first_observation)
            return (f"{task[0].upper()}{task[1:].replace('Your task', 'My task')}. I will work through it step by "
                    f"step: find what is needed, then act on it. {why}")
        if "No known action matches" in observation:
            return f"That command was not understood, so I try again differently. {why}"
        return why
