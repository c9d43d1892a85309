"""How AgentGym's clients and evaluation scripts talk to each environment server: one table.

Per environment (as ``agentenv/agentenv/envs/<env>.py`` and the evaluation scripts of
WooooDyy/AgentGym do it, react action format):
- the key that names an instance in requests (``id`` or ``env_idx``), the ``/create`` body and
  where the new id is in its answer (a field ``id`` or the whole answer);
- the ``/reset`` body for a task index and how the first observation is formed from the answer;
- the client-side parse of a model response into the action sent to ``/step`` (and the
  observations the client answers itself), and which answer field is the step's reward;
- the step limit (``max_round`` of AgentGym's evaluation scripts; for hosted envs their class's), the success rule and the scale
  of AgentGym's score (mean final reward x 100 for rewards in [0, 1]; SciWorld's score is 0-100).

For the environments we also host (BabyAI, TextCraft, SciWorld) the instruction and the client
parse are the in-process env classes' (one text, one parser); the other instructions are data in
``atlas_jax/assets/agentgym/client_prompts.json`` (AgentGym's texts verbatim, source recorded there).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re
from typing import Callable

from atlas_jax.envs.base import instruction_turns


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    rounds: int | None  # step limit; None: the hosted env class's default_max_steps
    success_rule: str  # what counts as success, in words (printed in the summary)
    success: Callable[[float, bool], bool]  # (final reward as the client reports it, done) -> success
    scale: float | None  # AgentGym's score = mean final reward x scale; None: the env class's score_scale
    id_key: str = "id"
    create_body: dict | None = None  # JSON body of /create (None: an empty POST)
    id_in_answer: str | None = "id"  # field of /create's answer holding the id (None: the answer is the id)
    reset_body: Callable[[int], dict] = lambda idx: {"data_idx": idx}
    first_observation: str = "reset"  # see agentgym_client.RemoteEnv._first_observation
    parse: str = "react"  # react | lmrlgym | raw | env (the in-process env class's parse_response)
    reward_key: str = "reward"  # the /step answer field the client reports as the step's reward
    observation_key: str = "observation"
    env_class: str | None = None  # "module:Class" of our in-process env (hosted environments)

    # hosted environments: one place for each default, the env class (imported only when asked)
    @property
    def max_rounds(self) -> int:
        return env_class(self).default_max_steps if self.rounds is None else self.rounds

    @property
    def score_scale(self) -> float:
        return float(env_class(self).score_scale if self.scale is None else self.scale)


def _reward_is_one(reward: float, done: bool) -> bool:
    return reward >= 1.0


_ONE = "final reward = 1"
# the tool environments (AgentBoard's tasks in AgentGym) report a progress rate in [0, 1]
_TOOL = dict(id_key="env_idx", create_body={"id": 0}, id_in_answer=None, reset_body=lambda idx: {"id": idx},
             first_observation="get", parse="raw", success_rule=_ONE + " (progress rate complete)",
             success=_reward_is_one, scale=100.0)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("babyai", None, "done with a positive final reward (reward = 1 - 0.9 * steps / limit, never 1)",
             lambda r, done: done and r > 0, None, parse="env", reward_key="score",
             env_class="atlas_jax.envs.babyai:BabyAIEnv"),
    Protocol("textcraft", None, _ONE, _reward_is_one, None, create_body={"commands": None, "goal": None},
             parse="env", env_class="atlas_jax.envs.textcraft:TextCraftEnv"),
    Protocol("sciworld", None, "final score = 100", lambda r, done: r >= 100, None, first_observation="sciworld",
             parse="env", reward_key="score", env_class="atlas_jax.envs.sciworld:SciWorldEnv"),
    Protocol("alfworld", 30, _ONE, _reward_is_one, 100.0, first_observation="alfworld",
             reset_body=lambda idx: {"game": idx, "world_type": "Text"}),
    Protocol("webshop", 10, _ONE + " (every attribute, option and the price match)", _reward_is_one, 100.0,
             id_key="env_idx", id_in_answer=None, reset_body=lambda idx: {"session_id": idx}, first_observation="get",
             observation_key="state"),
    Protocol("maze", 15, _ONE + " (goal reached)", _reward_is_one, 100.0, reset_body=lambda idx: {"game": idx},
             first_observation="maze", parse="lmrlgym"),
    Protocol("wordle", 8, _ONE + " (word guessed)", _reward_is_one, 100.0, reset_body=lambda idx: {"seed": idx},
             first_observation="wordle", parse="lmrlgym"),
    *(Protocol(name, rounds, **_TOOL) for name, rounds in
      (("weather", 10), ("movie", 12), ("todo", 15), ("academia", 12), ("sheet", 15))),
]}


@functools.lru_cache(maxsize=None)
def client_texts() -> dict:
    """AgentGym's client texts (conversation starts, maze/wordle first-observation templates)."""
    path = importlib.resources.files("atlas_jax") / "assets" / "agentgym" / "client_prompts.json"
    return json.loads(path.read_text(encoding="utf-8"))


def env_class(protocol: Protocol):
    module, name = protocol.env_class.split(":")
    return getattr(importlib.import_module(module), name)


def conversation_start(protocol: Protocol) -> list[dict]:
    """The turns before the first observation, as role/content messages."""
    if protocol.env_class is not None:
        return instruction_turns(env_class(protocol).instruction)
    return [{"role": "user" if m["from"] == "human" else "assistant", "content": m["value"]}
            for m in client_texts()[protocol.name]["conversation_start"]]


def strip_eos(response: str) -> str:
    """AgentGym's clients drop a trailing ``</s>`` with ``[:-5]``: one character more than it has."""
    return response[:-5] if response.endswith("</s>") else response


def parse_react(response: str) -> str:
    """AgentGym's ``BaseAdapter.parse_react``: the text after the last ``Action:``; without one,
    the whole text if it holds ``search[`` or ``click[``, else nothing. It never refuses."""
    head, sep, tail = strip_eos(response).rpartition("Action:")
    if not sep:
        return tail.strip() if ("search[" in tail or "click[" in tail) else ""
    return tail.strip()


def parse_lmrlgym(response: str) -> str:
    """The maze / wordle clients: the text between the first and second ``Action:``, else all."""
    parts = strip_eos(response).split("Action:")
    return (parts[1] if len(parts) > 1 else parts[0]).strip()


PARSERS: dict[str, Callable[[str], str]] = {"react": parse_react, "lmrlgym": parse_lmrlgym, "raw": lambda r: r}


def fill_template(template: str, **values: str) -> str:
    """``{{name}}`` placeholders (wordle's ``{{vocab}}``) filled by plain replacement."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)), template)
