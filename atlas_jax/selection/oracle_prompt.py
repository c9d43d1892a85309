"""The oracle's prompt (our own wording of the paper's four criteria) and the parser of its answers.

The prompt shows the task context as context (atlas_jax.data.trajectory: system prompt,
instructions, AgentGym's acknowledgement, and the task, which in AgentGym's layout is the first
observation with the goal), numbers steps as the data does (so answers index the mask directly),
offers only the trainable steps and states the cap; it asks for a plan of sub-goals first, then the
critical steps per sub-goal.

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

PROMPT_VERSION = "atlas-oracle-v2"  # v2: task context, data step numbering, sub-goal plan, trainable-step cap
CRITERIA = ("plan_creation", "critical_observation", "critical_action", "self_correction")

SYSTEM = ("You annotate expert trajectories of language agents. You identify the few steps an agent most needs "
          "to learn from, and you answer with a single JSON object and nothing else.")

# The paper's four criteria (ATLaS, Sec. 3), in our own words.
INSTRUCTIONS = """\
Below is an expert agent's trajectory: first its task context, then its steps. The agent's turns are the \
steps, numbered as in the data; after each step comes the environment's observation. Only these steps may be \
selected: {candidates}. Turns shown as context may not be selected.

A step is critical when it meets one of these four criteria:
- plan_creation (Plan Creation): the agent breaks the task into sub-goals from what it has observed and lays \
out, or revises, the path to completing the task.
- critical_observation (Critical Observation): the agent picks out and analyses key information in the \
environment's feedback, and that information decides what it does next.
- critical_action (Critical Action): the agent takes an action that moves the task decisively toward its \
goal, one the success of the task depends on.
- self_correction (Self Correction): the agent reflects on an earlier mistake or failed action and changes \
course to fix it.

Work in two stages.
1. Plan: write how the task gets solved as a short numbered list of sub-goals, in order.
2. Critical steps: go through the sub-goals in order and, for each, identify the steps that are critical for \
it under the criteria above. Routine steps that merely continue an obvious plan are not critical.

Select at most {cap} critical steps in total, out of the {n} selectable steps. List them most important first (the list is cut \
at {cap} in that order), each with its step index, the number of the sub-goal it serves, one criterion name \
from the list above and a short reason.

Answer with exactly one JSON object of this form:
{{"plan": "1. <sub-goal>; 2. <sub-goal>; ...", "critical_steps": [{{"index": {example}, "subgoal": 1, \
"criterion": "critical_action", "reason": "..."}}]}}

{trajectory}"""


def _clip(text: str, max_chars: int) -> str:
    text = text.strip()
    return text if len(text) <= max_chars else text[:max_chars] + " ...[truncated]"


def render_trajectory(traj: Trajectory, max_chars: int = 2000) -> str:
    """The task context (system, instructions, acknowledgement, the task) then the steps and observations,
    each step under its index in the data; ``loss: false`` steps are marked as context."""
    trainable = set(traj.trainable_steps)
    step_of = {turn: k for k, turn in enumerate(traj.step_turn_indices)}
    context_users = [i for i in range(traj.context_end) if traj.turns[i].role == "user"]
    parts = ["# Task context"]
    for i, turn in enumerate(traj.turns):
        if i == traj.context_end:
            parts.append("# Steps")
        text = _clip(turn.content, max_chars)
        if turn.role == "system":
            parts.append(f"## System prompt\n{text}")
        elif turn.role == "assistant" and step_of[i] not in trainable:
            parts.append(f"## Step {step_of[i]} (the agent's acknowledgement; context, not selectable)\n{text}")
        elif turn.role == "assistant":
            parts.append(f"## Step {step_of[i]}\n{text}")
        elif i < traj.context_end:
            title = "Task" if i == context_users[-1] else "Instructions to the agent"
            parts.append(f"## {title}\n{text}")
        else:
            parts.append(f"## Observation after step {step_of[i - 1]}\n{text}")
    return "\n\n".join(parts)


def _ranges(steps) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    out, start = [], None
    for k, nxt in zip(steps, list(steps[1:]) + [None]):
        start = k if start is None else start
        if nxt != k + 1:
            out.append(str(k) if k == start else f"{start}-{k}")
            start = None
    return ", ".join(out)


def build_messages(traj: Trajectory, cap: int, max_chars: int = 2000) -> list[dict[str, str]]:
    """The oracle's chat request; ``cap`` counts trainable steps (selectors.trajectory_cap)."""
    candidates = traj.trainable_steps
    n = len(candidates)
    user = INSTRUCTIONS.format(cap=cap, n=n, candidates=_ranges(candidates), example=candidates[0],
                               trajectory=render_trajectory(traj, max_chars))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class OracleAnswerError(ValueError):
    """An answer with no usable step (retried, then reported as failed)."""


@dataclasses.dataclass
class OracleAnswer:
    ranked: list[int]
    criteria: dict[int, str | None]
    plan: str | None
    notes: collections.Counter  # partial_json, out_of_range, not_selectable, duplicate, over_cap, unknown_criterion


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


def parse_answer(text: str, num_steps: int, cap: int, candidates=None) -> OracleAnswer:
    """Validate an answer: out-of-range and repeated indices are dropped, so are steps not in
    ``candidates`` (the trainable steps; default all), extra steps beyond ``cap`` are cut (in the
    oracle's order), unknown criteria become None; each is counted in ``notes``."""
    allowed = set(range(num_steps) if candidates is None else candidates)
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
        if index not in allowed:
            notes["not_selectable"] += 1
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
        raise OracleAnswerError(f"no selectable step index in the answer (selectable: {sorted(allowed)})")
    if len(ranked) > cap:
        notes["over_cap"] += 1
        for k in ranked[cap:]:
            del criteria[k]
        ranked = ranked[:cap]
    plan = obj.get("plan")
    return OracleAnswer(ranked, criteria, plan if isinstance(plan, str) else None, notes)
