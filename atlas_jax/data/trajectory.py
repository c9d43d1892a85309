"""Trajectory files -> one trajectory type, with validation and read counts.

Formats (detected per record):
- AgentTraj-L / ShareGPT: ``{"item_id" | "id", "conversations": [{"from", "value", "loss"?}, ...]}``
  with ``from`` in human/user, gpt/assistant, system.
- OpenAI messages: ``{"item_id" | "id", "messages": [{"role", "content"}, ...]}``.
Files are JSONL (one record a line) or JSON (a list of records, or one record).

Steps and task context (DESIGN.md; the one definition every stage uses):
- a trajectory's *steps* are its assistant turns, numbered 0..n-1 in order; ``num_steps`` = n and
  mask files index steps this way;
- a step marked ``"loss": false`` (AgentGym's acknowledgement "OK. I'll follow your instructions
  ...") is context: never trained, selected or offered to the oracle; the other steps are the
  *trainable steps*;
- the *task context* is every turn before the first trainable step: the system turn, the
  instruction, the acknowledgement and, in AgentGym's layout, the first observation, which
  carries the goal. Plain ShareGPT/OpenAI data: system turn + first user turn.
- an *observation* is a user turn after the first trainable step; the observation of step k is
  the user turn right before it, if that turn is not part of the task context.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Iterator, Sequence

from etils import epath

from atlas_jax.jsonl import (ReadReport, check_input_file, check_on_error, decode_document, iter_json_lines,
                             skip_or_raise)

__all__ = ["ReadReport", "Trajectory", "TrajectoryError", "Turn", "iter_raw", "parse_record", "parse_records",
           "read_trajectories"]

ROLE_ALIASES = {
    "conversations": {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                      "system": "system"},
    "messages": {"user": "user", "assistant": "assistant", "system": "system"},
}
TURN_KEYS = {"conversations": ("from", "value"), "messages": ("role", "content")}


class TrajectoryError(ValueError):
    """Bad trajectory input; the message names file, line/record and item_id."""


@dataclasses.dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    content: str
    loss: bool | None = None  # AgentGym's per-turn flag; None when the file gives none


@dataclasses.dataclass(frozen=True)
class Trajectory:
    item_id: str
    turns: tuple[Turn, ...]
    source: str = ""  # "file:line", for error messages downstream

    @property
    def step_turns(self) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.role == "assistant")

    @property
    def num_steps(self) -> int:
        return sum(t.role == "assistant" for t in self.turns)

    @property
    def step_turn_indices(self) -> tuple[int, ...]:
        """Index into ``turns`` of each step."""
        return tuple(i for i, t in enumerate(self.turns) if t.role == "assistant")

    @property
    def trainable_steps(self) -> tuple[int, ...]:
        """Steps that may be trained and selected: those not marked ``loss: false``."""
        return tuple(k for k, t in enumerate(self.step_turns) if t.loss is not False)

    @property
    def context_end(self) -> int:
        """Index into ``turns`` of the first trainable step: the task context is ``turns[:context_end]``."""
        return self.step_turn_indices[self.trainable_steps[0]]

    @property
    def task_context(self) -> tuple[Turn, ...]:
        return self.turns[:self.context_end]

    @property
    def task_prompt(self) -> str:
        """The task as the data states it: the last user turn of the task context (the goal in AgentGym's layout)."""
        return next(t.content for t in reversed(self.task_context) if t.role == "user")

    def observation_turn(self, step: int) -> int | None:
        """Index into ``turns`` of the observation right before ``step``; None when the turn before it
        belongs to the task context (the first trainable step and everything before it)."""
        before = self.step_turn_indices[step] - 1
        return before if before >= self.context_end and self.turns[before].role == "user" else None

    @property
    def observations(self) -> tuple[str, ...]:
        """User turns after the task context, in order."""
        return tuple(t.content for t in self.turns[self.context_end:] if t.role == "user")

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat-template messages."""
        return [{"role": t.role, "content": t.content} for t in self.turns]

    def to_json(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "conversations": [
            {"from": {"user": "human", "assistant": "gpt"}.get(t.role, t.role), "value": t.content, "loss": t.loss}
            for t in self.turns]}


def _fail(where: str, item_id: str | None, reason: str, what: str) -> TrajectoryError:
    err = TrajectoryError(f"{where}" + (f" item_id={item_id!r}" if item_id is not None else "") + f": {what}")
    err.reason = reason
    return err


def parse_record(obj: Any, where: str) -> Trajectory:
    """Validate one decoded record; ``where`` ("file:line") goes into every error."""
    if not isinstance(obj, dict):
        raise _fail(where, None, "not an object", f"record is a {type(obj).__name__}, expected a JSON object")
    item_id = obj.get("item_id", obj.get("id"))
    if item_id is None:
        raise _fail(where, None, "missing item_id", "record has no 'item_id' (or 'id')")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise _fail(where, None, "bad item_id", f"item_id must be a string, got {item_id!r}")
    item_id = str(item_id)
    kinds = [k for k in ("conversations", "messages") if k in obj]
    if len(kinds) != 1:
        raise _fail(where, item_id, "unknown format",
                    "record needs exactly one of 'conversations' (AgentTraj-L/ShareGPT) or 'messages' (OpenAI)")
    kind = kinds[0]
    raw_turns = obj[kind]
    if not isinstance(raw_turns, list) or not raw_turns:
        raise _fail(where, item_id, "empty conversation", f"'{kind}' must be a non-empty list")
    role_key, text_key = TURN_KEYS[kind]
    turns = []
    for i, raw in enumerate(raw_turns):
        if not isinstance(raw, dict):
            raise _fail(where, item_id, "bad turn", f"{kind}[{i}] is not an object")
        role = ROLE_ALIASES[kind].get(raw.get(role_key))
        if role is None:
            raise _fail(where, item_id, "unknown role", f"{kind}[{i}].{role_key}={raw.get(role_key)!r}; expected "
                        f"one of {sorted(ROLE_ALIASES[kind])}")
        text = raw.get(text_key)
        if not isinstance(text, str):
            raise _fail(where, item_id, "bad content", f"{kind}[{i}].{text_key} must be a string, got {text!r:.60}")
        loss = raw.get("loss")
        if loss is not None and not isinstance(loss, bool):
            raise _fail(where, item_id, "bad loss flag", f"{kind}[{i}].loss must be true, false or null, got {loss!r}")
        if role == "system" and i != 0:
            raise _fail(where, item_id, "misplaced system turn", f"{kind}[{i}] is a system turn; only the first may be")
        if role == "assistant" and not text.strip():
            raise _fail(where, item_id, "empty assistant turn", f"{kind}[{i}] is an assistant turn with no text")
        if turns and role == turns[-1].role:
            # Steps must be separated by observations: otherwise step boundaries are ambiguous
            # and AgentTraj-L/ShareGPT alternate strictly anyway.
            raise _fail(where, item_id, f"two {role} turns in a row", f"{kind}[{i - 1}] and {kind}[{i}] are both "
                        f"{role} turns; turns must alternate")
        turns.append(Turn(role, text, loss))
    if not any(t.role == "user" for t in turns):
        raise _fail(where, item_id, "no task prompt", "conversation has no user/human turn")
    if not any(t.role == "assistant" for t in turns):
        raise _fail(where, item_id, "no assistant turn", "conversation has no assistant/gpt turn (no steps)")
    if next(t.role for t in turns if t.role != "system") != "user":
        raise _fail(where, item_id, "no task prompt", "the first non-system turn must be the user's task prompt")
    if all(t.loss is False for t in turns if t.role == "assistant"):
        raise _fail(where, item_id, "no trainable step", "every assistant turn is marked loss: false; nothing "
                    "to train or select")
    return Trajectory(item_id, tuple(turns), where)


def _is_json_document(name: str) -> bool:
    """.json, or (not .jsonl) a file whose first non-blank byte opens a list."""
    if name.endswith(".json") or name.endswith(".jsonl"):
        return name.endswith(".json")
    with epath.Path(name).open("rb") as f:
        while chunk := f.read(4096):
            head = chunk.removeprefix(b"\xef\xbb\xbf").lstrip()
            if head:
                return head.startswith(b"[")
    return False


def iter_raw(path: str) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line" or "file:record N", decoded object or TrajectoryError) for every record.

    JSONL is read a line at a time; a JSON document (a list of records, or one) is read whole."""
    name = os.fspath(path)
    if not _is_json_document(name):
        yield from iter_json_lines(name, TrajectoryError)
        return
    raw = epath.Path(name).read_bytes()
    try:
        text = decode_document(raw, name, TrajectoryError)
    except TrajectoryError as e:
        yield str(e).split(": ", 1)[0], e
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield f"{name}:{e.lineno}", _fail(f"{name}:{e.lineno}", None, "bad JSON", f"invalid JSON: {e.msg}")
        return
    records = data if isinstance(data, list) else [data]
    for i, obj in enumerate(records):
        yield f"{name}:record {i}", obj


def parse_records(records: Iterable[tuple[str, Any]], *, on_error: str = "raise",
                  report: ReadReport | None = None) -> tuple[list[Trajectory], ReadReport]:
    """Validate (where, object) pairs; ``on_error`` is "raise" (first bad record) or "skip" (count it)."""
    check_on_error(on_error)
    report = report or ReadReport()
    seen: dict[str, str] = {}
    out = []
    for where, obj in records:
        report.read += 1
        try:
            if isinstance(obj, TrajectoryError):
                raise obj
            traj = parse_record(obj, where)
            if traj.item_id in seen:
                raise _fail(where, traj.item_id, "duplicate item_id", f"item_id already used at {seen[traj.item_id]}")
        except TrajectoryError as e:
            skip_or_raise(e, on_error, report)
            continue
        seen[traj.item_id] = where
        out.append(traj)
        report.used += 1
    return out, report


def read_trajectories(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                      on_error: str = "raise") -> tuple[list[Trajectory], ReadReport]:
    """Read and validate trajectory files (JSONL or JSON, any supported format).

    Returns the trajectories in file order and a ReadReport; item_ids must be unique across files.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [check_input_file(p, "trajectory file") for p in paths]

    def records():
        for p in paths:
            yield from iter_raw(p)
    return parse_records(records(), on_error=on_error)
