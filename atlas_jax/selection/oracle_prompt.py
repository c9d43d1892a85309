"""The oracle's prompt (our own wording of the paper's four criteria) and the parser of its answers.

The answer format is fixed by DESIGN.md: one JSON object (a code fence around it is tolerated)
``{"plan": "...", "critical_steps": [{"index": 3, "criterion": "...", "reason": "..."}]}``.
Bump PROMPT_VERSION whenever the prompt text changes: it is part of the cache key.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re

from atlas_jax.data.trajectory import Trajectory

PROMPT_VERSION = "atlas-oracle-v1"
CRITERIA = ("plan_creation", "critical_observation", "critical_action", "self_correction")

SYSTEM = ("You annotate expert trajectories of language agents. You identify the few steps an agent most needs "
          "to learn from, and you answer with a single JSON object and nothing else.")

INSTRUCTIONS = """\
Below is an agent's task and its trajectory. The agent's turns are the steps, numbered from 0; after each step \
comes the environment's observation.

A step is critical when it falls under one of these criteria:
- plan_creation: the step lays out or revises a plan or sub-goals that structure the rest of the task.
- critical_observation: the step reads key information from an earlier observation and acts on it \
(noticing an object, a constraint, a result that changes what to do).
- critical_action: the step takes a decisive action that moves the task substantially toward its goal \
(or without which the goal cannot be reached).
- self_correction: the step recognises an earlier mistake or a failed action and changes course.

First write a short high-level plan (one to three sentences) of how the task gets solved. Then list at most \
{cap} critical steps, most important first, each with its index (0 to {last}), one criterion from the list \
above and a short reason. Routine steps that merely continue an obvious plan are not critical.

Answer with exactly one JSON object of this form:
{{"plan": "...", "critical_steps": [{{"index": 0, "criterion": "plan_creation", "reason": "..."}}]}}

{trajectory}"""


def _clip(text: str, max_chars: int) -> str:
    text = text.strip()
    return text if len(text) <= max_chars else text[:max_chars] + " ...[truncated]"


def render_trajectory(traj: Trajectory, max_chars: int = 2000) -> str:
    parts = []
    turns = list(traj.turns)
    if turns and turns[0].role == "system":
        parts.append(f"## Agent instructions\n{_clip(turns.pop(0).content, max_chars)}")
    step = -1
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            step += 1
            parts.append(f"## Step {step}\n{_clip(turn.content, max_chars)}")
        elif step < 0:
            parts.append(f"## Task\n{_clip(turn.content, max_chars)}")
        else:
            parts.append(f"## Observation after step {step}\n{_clip(turn.content, max_chars)}")
    return "\n\n".join(parts)


def build_messages(traj: Trajectory, cap: int, max_chars: int = 2000) -> list[dict[str, str]]:
    user = INSTRUCTIONS.format(cap=cap, last=traj.num_steps - 1, trajectory=render_trajectory(traj, max_chars))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class OracleAnswerError(ValueError):
    """An answer with no usable step (retried, then reported as failed)."""


@dataclasses.dataclass
class OracleAnswer:
    ranked: list[int]
    criteria: dict[int, str | None]
    plan: str | None
    notes: collections.Counter  # partial_json, out_of_range, duplicate, over_cap, unknown_criterion


_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.S)
_STEP_OBJECT = re.compile(r"\{[^{}]*\"index\"[^{}]*\}")
_PLAN = re.compile(r"\"plan\"\s*:\s*\"((?:[^\"\\]|\\.)*)\"")


def _decode(text: str) -> tuple[dict | None, bool]:
    """(the JSON object, whether it was complete); None when nothing object-like parses."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = body.find("{")
    if start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(body[start:])
            if isinstance(obj, dict):
                return obj, True
        except json.JSONDecodeError:
            pass
    # partial or broken JSON (e.g. cut by max_tokens): salvage the complete step objects
    steps = []
    for m in _STEP_OBJECT.finditer(body):
        try:
            steps.append(json.loads(m.group(0)))
        except json.JSONDecodeError:
            continue
    if not steps:
        return None, False
    plan = _PLAN.search(body)
    return {"plan": json.loads(f'"{plan.group(1)}"') if plan else None, "critical_steps": steps}, False


def _as_index(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def parse_answer(text: str, num_steps: int, cap: int) -> OracleAnswer:
    """Validate an answer: out-of-range and repeated indices are dropped, extra steps beyond ``cap``
    are cut (in the oracle's order), unknown criteria become None; each is counted in ``notes``."""
    obj, complete = _decode(text)
    if obj is None:
        raise OracleAnswerError(f"no JSON object in the answer: {text[:120]!r}")
    steps = obj.get("critical_steps")
    if not isinstance(steps, list):
        raise OracleAnswerError("the answer has no 'critical_steps' list")
    notes = collections.Counter()
    if not complete:
        notes["partial_json"] += 1
    ranked, criteria = [], {}
    for entry in steps:
        index = _as_index(entry.get("index") if isinstance(entry, dict) else entry)
        if index is None or not 0 <= index < num_steps:
            notes["out_of_range"] += 1
            continue
        if index in criteria:
            notes["duplicate"] += 1
            continue
        criterion = entry.get("criterion") if isinstance(entry, dict) else None
        criterion = criterion.strip().lower().replace(" ", "_").replace("-", "_") if isinstance(criterion, str) else None
        if criterion not in CRITERIA:
            notes["unknown_criterion"] += 1
            criterion = None
        ranked.append(index)
        criteria[index] = criterion
    if not ranked:
        raise OracleAnswerError(f"no step index in range 0..{num_steps - 1} in the answer")
    if len(ranked) > cap:
        notes["over_cap"] += 1
        for k in ranked[cap:]:
            del criteria[k]
        ranked = ranked[:cap]
    plan = obj.get("plan")
    return OracleAnswer(ranked, criteria, plan if isinstance(plan, str) else None, notes)
