"""The one interface every offline environment speaks (AgentGym's text protocol).

An episode: ``obs = env.reset(task_index)`` gives the first observation (it states the
task's goal); the agent answers ``Thought: ...\nAction: ...``; ``env.step(text)`` takes the
*last* ``Action:`` of that text and returns a :class:`StepResult`. Unparsable or invalid
actions get an error observation and use up a step, never an exception, so a model-driven
eval loop cannot be crashed by what the model writes. ``env.instruction`` is the fixed
AgentGym task instruction (the first human turn of every AgentTraj-L record).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Any

# AgentGym's assistant acknowledgement after the instruction turn (it carries no loss).
ACKNOWLEDGEMENT = "OK. I'll follow your instructions and try my best to solve the task."
SPLITS = ("train", "eval")

_ACTION_RE = re.compile(r"Action:[ \t]*\n?[ \t]*(.*)", re.IGNORECASE)


class ExpertFailed(Exception):
    """An expert cannot solve a task; ``reason`` is short and shared by like cases (for reports)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclasses.dataclass
class StepResult:
    observation: str
    reward: float
    done: bool
    success: bool
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def parse_action(response: str) -> str | None:
    """The action of a ``Thought: ...\\nAction: ...`` response: the text after the last
    ``Action:`` (on the same line or the next), without a trailing end-of-sequence mark."""
    matches = _ACTION_RE.findall(response)
    if not matches:
        return None
    action = matches[-1].replace("</s>", "").strip()
    return action or None


def instruction_turns(instruction: str) -> list[dict]:
    """The turns before the first observation, as role/content messages: AgentGym's instruction
    turn and its acknowledgement."""
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": ACKNOWLEDGEMENT}]


def format_response(thought: str, action: str) -> str:
    """An assistant turn in the protocol's format (what experts write and models learn)."""
    return f"Thought:\n{thought}\n\nAction:\n{action}"


def make_record(env_name: str, task_index: int, instruction: str, first_observation: str,
                turns: list[tuple[str, str]]) -> dict:
    """An AgentTraj-L record: the instruction, the acknowledgement, the first observation,
    then (assistant response, next observation) pairs. Only assistant turns carry loss."""
    conversations = [
        {"from": "human", "value": instruction, "loss": None},
        {"from": "gpt", "value": ACKNOWLEDGEMENT, "loss": False},
        {"from": "human", "value": first_observation, "loss": None},
    ]
    for i, (response, observation) in enumerate(turns):
        conversations.append({"from": "gpt", "value": response, "loss": True})
        if i < len(turns) - 1:  # the final observation is never seen by the agent
            conversations.append({"from": "human", "value": observation, "loss": None})
    return {"item_id": f"{env_name}_{task_index}", "conversations": conversations}


@dataclasses.dataclass(frozen=True)
class TaskFamilies:
    """Which task families to play: shell patterns (``fnmatch``), e.g. include ``Pickup*``;
    an empty ``include`` admits every family not excluded."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, include: str | None, exclude: str | None) -> "TaskFamilies | None":
        """From comma-separated patterns (the CLI's --families / --exclude-families); None: all."""
        split = lambda text: tuple(p.strip() for p in (text or "").split(",") if p.strip())  # noqa: E731
        chosen = cls(split(include), split(exclude))
        return chosen if chosen.include or chosen.exclude else None

    def admits(self, family: str) -> bool:
        return ((not self.include or any(fnmatch.fnmatchcase(family, p) for p in self.include))
                and not any(fnmatch.fnmatchcase(family, p) for p in self.exclude))

    def __str__(self) -> str:
        return " ".join([f"families {','.join(self.include)}"] * bool(self.include)
                        + [f"excluding {','.join(self.exclude)}"] * bool(self.exclude))


def add_family_arguments(parser) -> None:
    """--families / --exclude-families, shared by `experts` and `eval`."""
    parser.add_argument("--families", default=None, metavar="PATTERNS",
                        help="only tasks of these families (comma-separated shell patterns; BabyAI: levels, e.g. "
                             "'Pickup*,GoToDoor'; TextCraft: recipe depths depth1..depth4; SciWorld: task names)")
    parser.add_argument("--exclude-families", default=None, metavar="PATTERNS",
                        help="skip tasks of these families (same patterns); --skip counts admitted tasks only")


class TextEnv:
    """Base class: parsing, step limits and the episode record live here once.

    Subclasses set ``name``, ``instruction`` and ``default_max_steps`` and implement
    ``_reset(task_index) -> str``, ``_act(action) -> StepResult`` and ``split_of(task_index)``.

    Conventions shared by every environment: ``StepResult.reward`` is the reward AgentGym's
    client reports for the step (its ``StepOutput.reward``); ``StepResult.done`` is the
    server's done flag (or the step limit, marked ``info["truncated"]``); ``success`` follows
    the environment's success rule; further server fields go into ``info``. AgentGym's score
    of an evaluation is the mean final reward times ``score_scale`` (100 for rewards in
    [0, 1], 1 for rewards already on a 0-100 scale).
    """

    name: str = ""
    instruction: str = ""
    default_max_steps: int = 20
    score_scale: float = 100

    def __init__(self, max_steps: int | None = None):
        self.max_steps = int(max_steps or self.default_max_steps)
        self.task_index: int | None = None
        self.first_observation = ""
        self.turns: list[tuple[str, str]] = []
        self.done = True
        self.success = False

    # -- task indices --------------------------------------------------------------
    def num_tasks(self) -> int:
        raise NotImplementedError

    def split_of(self, task_index: int) -> str:
        raise NotImplementedError

    def family_of(self, task_index: int) -> str:
        """The task's family (a BabyAI level, a TextCraft recipe depth, a SciWorld task): a held-out
        column keeps whole families out of training. One family per environment unless overridden."""
        return self.name

    def task_indices(self, split: str, n: int, start: int = 0, families: TaskFamilies | None = None) -> list[int]:
        """The first ``n`` task indices of ``split`` (ascending) whose family ``families`` admits,
        skipping ``start`` of them."""
        if split not in SPLITS:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {SPLITS}")
        found: list[int] = []
        for i in range(self.num_tasks()):
            if self.split_of(i) == split and (families is None or families.admits(self.family_of(i))):
                if start > 0:
                    start -= 1
                    continue
                found.append(i)
                if len(found) == n:
                    break
        return found

    def check_index(self, task_index: int) -> None:
        if not 0 <= task_index < self.num_tasks():
            raise ValueError(f"{self.name}: task index {task_index} out of range [0, {self.num_tasks()})")

    # -- episode -------------------------------------------------------------------
    def reset(self, task_index: int) -> str:
        self.check_index(task_index)
        self.task_index = task_index
        self.first_observation = self._reset(task_index)
        self.turns = []
        self.done = False
        self.success = False
        return self.first_observation

    def parse_response(self, response: str) -> tuple[str | None, StepResult | None]:
        """Client side (AgentGym's env client): the action to send to the server, or the
        observation the client answers itself without calling the server. Environments whose
        AgentGym client parses differently (sanitising, refusing two ``Action:`` lines)
        override this."""
        action = parse_action(response)
        if action is None:
            return None, StepResult("Invalid response: no action found. Answer in the format "
                                    "'Thought:\\n...\\n\\nAction:\\n...'.", 0.0, False, False,
                                    {"invalid": True, "action": None})
        return action, None

    def step_action(self, action: str) -> StepResult:
        """Server side (AgentGym's env server ``/step``): apply one action string as is."""
        result = self._act(action)
        result.info.setdefault("action", action)
        return result

    def step(self, response: str) -> StepResult:
        """One agent turn: the client parses ``response``; the server steps on its action;
        the turn is recorded and the step limit applied (AgentGym's evaluator's max rounds)."""
        if self.done:
            raise RuntimeError(f"{self.name}_{self.task_index}: step() after the episode ended; call reset()")
        action, refused = self.parse_response(response)
        result = refused if refused is not None else self.step_action(action)
        self.turns.append((response, result.observation))
        if result.success:
            self.success = True
            result.done = True
        if not result.done and len(self.turns) >= self.max_steps:
            result.done = True
            result.info["truncated"] = True
        self.done = result.done
        result.info["steps"] = len(self.turns)
        return result

    def to_record(self) -> dict:
        """The finished (or running) episode as an AgentTraj-L record."""
        if self.task_index is None:
            raise RuntimeError(f"{self.name}: no episode to record; call reset() first")
        return make_record(self.name, self.task_index, self.instruction, self.first_observation, self.turns)

    def close(self) -> None:
        pass

    def _reset(self, task_index: int) -> str:
        raise NotImplementedError

    def _act(self, action: str) -> StepResult:
        raise NotImplementedError
