"""BabyAI (minigrid) behind AgentGym's text protocol, exactly as AgentGym serves it.

For the same ``data_idx`` and action strings this returns the observation, reward and done
flag of AgentGym's BabyAI server (agentenv-babyai, commit 3ef9235) as seen through its
client, checked black-box against that server (tests/envs/fixtures/babyai_agentgym.json).

- Task index ``i`` is level ``LEVELS[i % 40]`` with seed ``i // 40``. AgentGym pins
  minigrid < 2.5, whose ``BabyAI-GoToObjS6-v0`` is a room of size 4 (minigrid 3 fixed
  the registry as ``-v1`` with size 6); we serve what AgentGym serves (``GoToObjS4-v0``).
- A text action expands into primitive moves (babyai_view); they are played until one
  leaves the agent's view image unchanged, and the episode is *not* stopped when minigrid
  reports the level done: "toggle and go through" toggles, then steps into the doorway, and
  that step can undo an "open the door" success.
- Reward: minigrid's own, 1 - 0.9 * primitive steps / the level's step limit; the episode
  is done only when that reward exceeds 0.5 (a later success is reported "completed" in
  the text but not done). The client reports the server's running ``score`` (the sum of the
  rewards of all server steps) as the step's reward; that is ``StepResult.reward``.
- Client side (AgentGym's ``BabyAIEnvClient.step``): the text after the one ``Action:``
  line, stripped of everything but letters, digits, commas and spaces; two ``Action:``
  lines are refused without calling the server.
"""
from __future__ import annotations

import contextlib
import io
import re

import gymnasium
import minigrid  # noqa: F401  (registers the BabyAI levels)
import numpy as np
from gymnasium.envs.registration import load_env_creator
from minigrid.envs.babyai.core.levelgen import LevelGen

from atlas_jax.envs.babyai_view import Reading, read
from atlas_jax.envs.base import StepResult, TextEnv

LEVELS = (  # AgentGym's 40 levels, in its order (its level k is LEVELS[k - 1])
    "GoToRedBallGrey-v0", "GoToRedBall-v0", "GoToRedBallNoDists-v0", "GoToObjS6-v0", "GoToLocalS8N7-v0",
    "GoToObjMazeS7-v0", "GoToImpUnlock-v0", "GoToSeqS5R2-v0", "GoToRedBlueBall-v0", "GoToDoor-v0",
    "GoToObjDoor-v0", "Open-v0", "OpenRedDoor-v0", "OpenDoorLoc-v0", "OpenRedBlueDoorsDebug-v0",
    "OpenDoorsOrderN4Debug-v0", "Pickup-v0", "UnblockPickup-v0", "PickupLoc-v0", "PickupDistDebug-v0",
    "PickupAbove-v0", "PutNextLocalS6N4-v0", "PutNextS7N4Carrying-v0", "Unlock-v0", "UnlockLocalDist-v0",
    "KeyInBox-v0", "UnlockPickupDist-v0", "BlockedUnlockPickup-v0", "UnlockToUnlock-v0", "ActionObjDoor-v0",
    "FindObjS7-v0", "KeyCorridorS6R3-v0", "OneRoomS20-v0", "MoveTwoAcrossS8N9-v0", "SynthS5R2-v0",
    "SynthLoc-v0", "SynthSeq-v0", "MiniBossLevel-v0", "BossLevel-v0", "BossLevelNoUnlock-v0",
)
# minigrid < 2.5 registered GoToObjS6-v0 with room_size=4; minigrid 3 calls that level GoToObjS4-v0.
MINIGRID_IDS = {"GoToObjS6-v0": "GoToObjS4-v0"}
SEEDS = 1000  # task indices 0 .. 40 * SEEDS - 1
EVAL_SEEDS = 10

# AgentGym's instruction turn for BabyAI, verbatim: it advertises "pick up" although the
# server only understands "pickup", and it does not mention "drop" or "check available actions".
INSTRUCTION = (
    "You are an exploration master that wants to finish every goal you are given. Every round I will give you an "
    "observation, and you have to respond an action and your thought based on the observation to finish the given "
    "task. You are placed in a room and you need to accomplish the given goal with actions.\n\nYou can use the "
    "following actions: \n\n- turn right \n\n- turn left \n\n- move forward \n\n- go to <obj> <id> \n\n- pick up "
    "<obj> <id> \n\n- go through <door> <id>: <door> must be an open door. \n\n- toggle and go through <door> <id>: "
    "<door> can be a closed door or a locked door. If you want to open a locked door, you need to carry a key that "
    "is of the same color as the locked door. \n\n- toggle: there is a closed or locked door right in front of you "
    "and you can toggle it.\nYour response should use the following format:\nThought:\n<Your Thought>\n\nAction:\n"
    "<Your Action>"
)
NOT_RECOGNIZED = "The action is not recognized. Please check valid actions."
NO_CHANGE = "No change in state."
TWO_ACTIONS = "Error: Only one 'Action' is allowed per response. Please adjust your response."
COMPLETED = "\n The task is completed."
_CLIENT_ACTION_RE = re.compile(r"Action:\s*(.*?)(?=\n|$)", re.DOTALL)
_CLIENT_DROP_RE = re.compile(r"[^A-Za-z0-9, ]+")


class StaleLockedRoom:
    """minigrid < 2.5 kept ``LevelGen.locked_room`` from one generated mission to the next
    (minigrid 3 clears it); with ``implicit_unlock=False`` (the Synth levels) the stale room
    still filters which objects a mission may name. This mixin restores that: it ignores
    the clearing, so our levels generate AgentGym's missions."""

    @property
    def locked_room(self):
        return self.__dict__.get("_stale_locked_room")

    @locked_room.setter
    def locked_room(self, room):
        if room is not None:
            self.__dict__["_stale_locked_room"] = room


def make_level(level: str):
    """A fresh, unwrapped instance of AgentGym's level (with minigrid < 2.5's behaviour)."""
    spec = gymnasium.spec(f"BabyAI-{MINIGRID_IDS.get(level, level)}")
    cls = load_env_creator(spec.entry_point)
    if issubclass(cls, LevelGen):
        cls = _STALE.setdefault(cls, type(cls.__name__, (StaleLockedRoom, cls), {}))
    return cls(**spec.kwargs)


_STALE: dict[type, type] = {}


def state_key(uenv) -> tuple:
    """Everything that decides the future of an episode: pose, carried object, the grid."""
    carrying = (uenv.carrying.type, uenv.carrying.color) if uenv.carrying is not None else None
    return (tuple(int(v) for v in uenv.agent_pos), int(uenv.agent_dir), carrying, uenv.grid.encode().tobytes())


def run_primitives(uenv, primitives: list[int], image) -> tuple[float, bool, np.ndarray]:
    """Play an action's expansion until a move leaves the view ``image`` unchanged (minigrid's
    end of the level does not stop it): the last move's reward, whether it ended the level,
    and the last observation image."""
    reward, terminated = 0.0, False
    for primitive in primitives:
        obs, reward, terminated, _, _ = uenv.step(primitive)
        changed = not np.array_equal(obs["image"], image)
        image = obs["image"]
        if not changed:
            break
    return reward, bool(terminated), image


def client_action(response: str) -> str | None:
    """The action AgentGym's BabyAI client sends for ``response``; None if it refuses it."""
    matches = _CLIENT_ACTION_RE.findall(response)
    if len(matches) > 1:
        return None
    action = _CLIENT_DROP_RE.sub("", matches[-1] if matches else "")
    return " ".join(action.split())


class BabyAIEnv(TextEnv):
    name = "babyai"
    instruction = INSTRUCTION
    default_max_steps = 20
    score_scale = 100

    def __init__(self, max_steps: int | None = None):
        super().__init__(max_steps)
        self.uenv = None
        self.reading: Reading | None = None
        self.image = None  # the last observation image minigrid returned (AgentGym's obs_2d)
        self.goal = ""
        self.server_reward = 0.0  # AgentGym's env.reward: the last primitive's reward, kept across rejected actions
        self.score = 0.0  # AgentGym's server "score": the running sum of server_reward over server steps
        self.server_done = False
        self.state = ""  # AgentGym's states[-1]: the last observation text without the action list

    @property
    def offered(self) -> dict[str, list[int]]:
        return self.reading.actions

    def num_tasks(self) -> int:
        return len(LEVELS) * SEEDS

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return "eval" if task_index // len(LEVELS) < EVAL_SEEDS else "train"

    def family_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return self.level_and_seed(task_index)[0].removesuffix("-v0")  # the level, e.g. PickupLoc

    @staticmethod
    def level_and_seed(task_index: int) -> tuple[str, int]:
        """AgentGym's level name (its ``all_levels[i % 40 + 1]``) and seed for a task index."""
        return LEVELS[task_index % len(LEVELS)], task_index // len(LEVELS)

    def _reset(self, task_index: int) -> str:
        level, seed = self.level_and_seed(task_index)
        # AgentGym builds a fresh level and resets it twice with the seed (once in its env's
        # constructor, once on /reset); the second mission can differ (StaleLockedRoom).
        self.uenv = make_level(level)
        with contextlib.redirect_stdout(io.StringIO()):  # level generation prints "Sampling rejected"
            self.uenv.reset(seed=seed)
            obs, _ = self.uenv.reset(seed=seed)
        self.goal = self.uenv.mission.replace("then", "and").replace("after you", "and")
        self.image = obs["image"]
        self.reading = read(self.uenv, self.image)
        self.server_reward, self.score, self.server_done = 0.0, 0.0, False
        self.state = self.reading.description
        return self.observe()

    def observe(self) -> str:
        """What AgentGym's server answers on GET /observation: the goal, the last state text
        (an error message after a rejected action) and the actions available now."""
        return f"Your goal: {self.goal}\n{self.state}{self._available()}"

    def parse_response(self, response: str) -> tuple[str | None, StepResult | None]:
        action = client_action(response)
        if action is None:
            return None, StepResult(TWO_ACTIONS, 0, False, False, {"refused": True, "action": None})
        return action, None

    def _act(self, action: str) -> StepResult:
        action = action.lower().strip()
        actions, invalid = self.reading.actions, False
        if "check" in action:
            text = "You can take the following actions: " + ", ".join(actions)
        elif action == "" or action not in actions:
            text = NO_CHANGE if action == "" else self.reading.errors.get(action, NOT_RECOGNIZED)
            invalid = True
        elif not actions[action]:
            text = NO_CHANGE
        else:
            text = self._play(actions[action])
        self.state = text
        self.score += self.server_reward
        info = {"reward": self.server_reward, "score": self.score, "invalid": invalid}
        return StepResult(text + self._available(), self.score, self.server_done, self.server_done, info)

    def _play(self, primitives: list[int]) -> str:
        reward, terminated, self.image = run_primitives(self.uenv, primitives, self.image)
        self.reading = read(self.uenv, self.image)
        text = self.reading.description + (COMPLETED if terminated else "")
        self.server_reward = reward
        self.server_done = terminated and reward > 0.5
        if reward == 1 and not self.server_done:  # AgentGym's guard; minigrid's reward never reaches 1
            self.server_done, text = True, text + COMPLETED
        return text

    def _available(self) -> str:
        return "\nAvailable actions: [" + ", ".join(f'"{a}"' for a in self.reading.actions) + "]"
