"""ScienceWorld exactly as AgentGym's ``agentenv-sciworld`` server plays it (``scienceworld`` package, Java 17+).

Task index ``i`` is AgentGym's ``data_idx``: AgentGym lists every task of the package's task
table (without the seven it leaves out) with all its variations, task by task, 4,639 in all.
Reset loads the task and answers ``look around``; the first observation is the task
description, a newline and that answer, as AgentGym's client shows it. A step's reward is
AgentGym's score (0-100, negative on failure), as its client reports it; done is the
simulator's (completed, failed, or more than 100 moves). Split: the package's own variation
folds: test variations are eval, train variations are train (dev variations are neither).

The simulator's output depends on its JVM's history, not only on the task and the actions
(the order of listed objects, plant growth, electrical and thermal timing): AgentGym's results
for an index vary with what its server ran before. The canonical choice is a fresh simulator
per episode, which is exactly what a fresh AgentGym env (its first reset after ``/create``)
gives: every reset starts a new JVM and replays AgentGym's calls (load, task description,
full ``step("look around")``; steps go through the package's full ``step`` as AgentGym's do).
Task lists, variation folds and gold paths come from a second, long-lived "catalog" JVM, so
they never disturb an episode's history. The JVM heap is capped (it grows past 1 GB otherwise).
"""
from __future__ import annotations

import functools
import shutil

from atlas_jax.envs.base import StepResult, TextEnv

EXCLUDED_TASK_IDS = ("5-1", "5-2", "9-1", "9-2", "9-3", "10-1", "10-2")  # as in AgentGym
JAVA_HEAP = "-Xmx1g"

INSTRUCTION = (
    "You are an agent for science world. Every round I will give you an observation, you have to respond an action "
    "based on the observation to finish the given task. Here are the actions you may take: "
    '[{"action": "open/close OBJ", "description": "open/close a container"}, {"action": "de/activate OBJ", '
    '"description": "activate/deactivate a device"}, {"action": "connect OBJ to OBJ", "description": "connect '
    'electrical components"}, {"action": "disconnect OBJ", "description": "disconnect electrical components"}, '
    '{"action": "use OBJ [on OBJ]", "description": "use a device/item"}, {"action": "look around", "description": '
    '"describe the current room"}, {"action": "look at OBJ", "description": "describe an object in detail"}, '
    '{"action": "look in OBJ", "description": "describe a container\'s contents"}, {"action": "read OBJ", '
    '"description": "read a note or book"}, {"action": "move OBJ to OBJ", "description": "move an object to a '
    'container"}, {"action": "pick up OBJ", "description": "move an object to the inventory"}, {"action": "put down '
    'OBJ", "description": "drop an inventory item"}, {"action": "pour OBJ into OBJ", "description": "pour a liquid '
    'into a container"}, {"action": "dunk OBJ into OBJ", "description": "dunk a container into a liquid"}, '
    '{"action": "mix OBJ", "description": "chemically mix a container"}, {"action": "go to LOC", "description": '
    '"move to a new location"}, {"action": "eat OBJ", "description": "eat a food"}, {"action": "flush OBJ", '
    '"description": "flush a toilet"}, {"action": "focus on OBJ", "description": "signal intent on a task object"}, '
    '{"action": "wait", "description": "take no action for 10 iterations"}, {"action": "wait1", "description": '
    '"take no action for 1 iteration"}, {"action":"examine OBJ","description":"provides a description of the '
    'objects present on or in a receptacle."}, {"action": "task", "description": "describe current task"}, '
    '{"action": "inventory", "description": "list your inventory"}]\nYour response should use the following format:\n'
    "Thought:\nyour thoughts.\n\nAction:\nyour next action"
)


def task_names() -> list[str]:
    """AgentGym's task order: the package's task table, without the excluded tasks."""
    from scienceworld.constants import ID2TASK

    return [name for task_id, name in ID2TASK.items() if task_id not in EXCLUDED_TASK_IDS]


def _start_server():
    if shutil.which("java") is None:
        raise RuntimeError("SciWorld needs Java 17+, but `java` is not on PATH "
                           "(e.g. `apt-get install -y openjdk-17-jre-headless`)")
    import scienceworld.scienceworld as sw

    plain = sw.launch_gateway
    sw.launch_gateway = functools.partial(plain, javaopts=[JAVA_HEAP])  # the package offers no JVM options
    try:
        return sw.ScienceWorldEnv()  # AgentGym's defaults (a 100-move limit)
    finally:
        sw.launch_gateway = plain


def parse_react(response: str) -> str:
    """AgentGym's SciWorld client (ReAct format): drop a trailing ``</s>`` together with the
    character before it (the client cuts five characters), then take the text after the last
    ``Action:``; without one, the action is empty (or the whole text if it holds ``search[`` or
    ``click[``)."""
    if response.endswith("</s>"):
        response = response[:-5]
    _, sep, action = response.rpartition("Action:")
    if not sep:
        return response.strip() if ("search[" in response or "click[" in response) else ""
    return action.strip()


class SciWorldEnv(TextEnv):
    name = "sciworld"
    instruction = INSTRUCTION
    default_max_steps = 30
    score_scale = 1  # rewards are AgentGym's 0-100 scores

    def __init__(self, max_steps: int | None = None):
        super().__init__(max_steps)
        self.catalog = _start_server()  # task table, folds, gold paths; never plays an episode
        self.sim = None  # the episode's simulator, new at every reset
        self.reset_fields: dict = {}
        self.tasks = task_names()
        self.games = [(task, v) for task in self.tasks for v in range(self.catalog.get_max_variations(task))]
        self._folds: dict[str, tuple[frozenset, frozenset]] = {}  # task -> (train, test) variations

    def close(self) -> None:
        for sim in (self.sim, self.catalog):
            if sim is not None:
                sim.close()
        self.sim = self.catalog = None

    def _fold(self, task: str) -> tuple[frozenset, frozenset]:
        if task not in self._folds:
            self.catalog.load(task, 0, "")
            self._folds[task] = (frozenset(self.catalog.get_variations_train()),
                                 frozenset(self.catalog.get_variations_test()))
        return self._folds[task]

    def num_tasks(self) -> int:
        return len(self.games)

    def task_and_variation(self, task_index: int) -> tuple[str, int]:
        return self.games[task_index]

    def family_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return self.task_and_variation(task_index)[0]  # the ScienceWorld task, e.g. boil

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        task, variation = self.games[task_index]
        train, test = self._fold(task)
        return "eval" if variation in test else "train" if variation in train else "none"

    def _reset(self, task_index: int) -> str:
        task, variation = self.games[task_index]
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        self.sim = _start_server()
        self.sim.load(task, variation, "")
        description = self.sim.get_task_description()
        observation, reward, done, info = self.sim.step("look around")
        # the fields of AgentGym's /reset answer, for a server that speaks its protocol
        self.reset_fields = {"task_name": task, "var_num": variation, "task_description": description,
                             "observation": observation, "reward": reward, "score": info["score"], "done": done}
        return description + "\n" + observation

    def gold_actions(self) -> list[str]:
        """The package's gold path for the current task (from the catalog simulator)."""
        task, variation = self.games[self.task_index]
        self.catalog.load(task, variation, "", generateGoldPath=True)
        return list(self.catalog.get_gold_action_sequence())

    def task_indices(self, split: str, n: int, start: int = 0) -> list[int]:
        """Round-robin over tasks (each task's variations of ``split`` in order), so a few
        indices already cover many tasks."""
        per_task: dict[str, list[int]] = {t: [] for t in self.tasks}
        for i, (task, _) in enumerate(self.games):
            if self.split_of(i) == split:
                per_task[task].append(i)
        ordered = [per_task[t][k] for k in range(max(map(len, per_task.values()))) for t in self.tasks
                   if k < len(per_task[t])]
        return ordered[start:start + n]

    def parse_response(self, response: str) -> tuple[str | None, StepResult | None]:
        return parse_react(response), None

    def _act(self, action: str) -> StepResult:
        observation, reward, done, info = self.sim.step(action)
        score = int(info["score"])
        # info: AgentGym's /step fields beyond observation and done (its "reward" is the score's change)
        return StepResult(observation, float(score), bool(done), score >= 100, {"score": score, "reward": reward})
