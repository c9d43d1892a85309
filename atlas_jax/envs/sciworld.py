"""ScienceWorld behind the text protocol, on the `scienceworld` package (Java 17+).

Task index ``i`` is task ``TASKS[i % 23]`` (the package's tasks.json order, without the
seven AgentGym leaves out) and variation ``i // 23``. Split: the package's own variation
folds, test variations are eval, train variations are train (dev variations and indices past
a task's variations belong to neither). The first observation is the task description plus
``look around``, as AgentGym's SciWorld server gives it.

Steps call the server's plain ``step`` and read score and completion directly: the
package's ``step`` also enumerates every valid action (50-800 ms a call). The JVM heap is
capped, since it grows past 1 GB otherwise.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
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
    '"take no action for 1 iteration"}, {"action": "task", "description": "describe current task"}, {"action": '
    '"inventory", "description": "list your inventory"}]\nYour response should use the following format:\n'
    "Thought:\nyour thoughts.\n\nAction:\nyour next action"
)


def task_names() -> list[str]:
    with open(importlib.resources.files("scienceworld") / "tasks.json", encoding="utf-8") as f:
        tasks = json.load(f)
    return [t["task_name"] for t in tasks if t["task_id"] not in EXCLUDED_TASK_IDS]


def _start_server():
    if shutil.which("java") is None:
        raise RuntimeError("SciWorld needs Java 17+, but `java` is not on PATH "
                           "(e.g. `apt-get install -y openjdk-17-jre-headless`)")
    import scienceworld.scienceworld as sw

    plain = sw.launch_gateway
    sw.launch_gateway = functools.partial(plain, javaopts=[JAVA_HEAP])  # the package offers no JVM options
    try:
        return sw.ScienceWorldEnv("", envStepLimit=10**6)  # our step limit governs
    finally:
        sw.launch_gateway = plain


class SciWorldEnv(TextEnv):
    name = "sciworld"
    instruction = INSTRUCTION
    default_max_steps = 30

    def __init__(self, max_steps: int | None = None):
        super().__init__(max_steps)
        self.tasks = task_names()
        self.sim = _start_server()
        self._folds: dict[str, tuple[int, frozenset, frozenset]] = {}  # task -> (variations, train, test)

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    def _fold(self, task: str) -> tuple[int, frozenset, frozenset]:
        if task not in self._folds:
            self.sim.load(task, 0, "")
            self._folds[task] = (self.sim.get_max_variations(task), frozenset(self.sim.get_variations_train()),
                                 frozenset(self.sim.get_variations_test()))
        return self._folds[task]

    def num_tasks(self) -> int:
        return len(self.tasks) * max(self._fold(t)[0] for t in self.tasks)

    def task_and_variation(self, task_index: int) -> tuple[str, int]:
        return self.tasks[task_index % len(self.tasks)], task_index // len(self.tasks)

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        task, variation = self.task_and_variation(task_index)
        count, train, test = self._fold(task)
        if variation >= count:
            return "none"
        return "eval" if variation in test else "train" if variation in train else "none"

    def _reset(self, task_index: int, gold: bool = False) -> str:
        task, variation = self.task_and_variation(task_index)
        if variation >= self._fold(task)[0]:
            raise ValueError(f"sciworld: task index {task_index} is variation {variation} of {task}, "
                             f"which has {self._fold(task)[0]}")
        self.sim.load(task, variation, "", generateGoldPath=gold)
        self.sim.server.reset()
        look = self.sim.server.step("look around")
        return self.sim.taskdescription() + "\n" + look

    def gold_actions(self) -> list[str]:
        """The package's gold path for the current task; leaves the episode freshly reset.

        A gold-path load lists objects in another order than a plain load, so the episode
        itself runs on a plain reload. Object order in listings depends on the JVM's history
        (not on the task), so the first observation is taken from that reload."""
        self._reset(self.task_index, gold=True)
        actions = list(self.sim.get_gold_action_sequence())
        self.first_observation = self._reset(self.task_index)
        return actions

    def task_indices(self, split: str, n: int, start: int = 0) -> list[int]:
        """Round-robin over tasks (each task's variations of ``split`` in order), so a few
        indices already cover many tasks."""
        per_task = {t: [] for t in self.tasks}
        for i in range(self.num_tasks()):
            task, variation = self.task_and_variation(i)
            if variation < self._fold(task)[0] and self.split_of(i) == split:
                per_task[task].append(i)
        ordered = [i for k in range(max(map(len, per_task.values()))) for t in self.tasks
                   if k < len(per_task[t]) for i in [per_task[t][k]]]
        return ordered[start:start + n]

    def _act(self, action: str) -> StepResult:
        observation = self.sim.server.step(action)
        score = int(round(100 * self.sim.server.getScore()))
        done = bool(self.sim.server.getCompleted()) or score < 0
        success = score >= 100
        return StepResult(observation, score / 100.0, done or success, success, {"score": score})
