"""BabyAI (minigrid) behind the text protocol: the view in words, high-level text actions.

Task index ``i`` is level ``LEVELS[i % 40]`` (AgentGym's 40 levels, in its order) with
seed ``i // 40``, as AgentGym's BabyAI server maps ``data_idx``. Split: seeds 0-9 (indices
0-399) are eval, seeds 10 and up are train.

Each observation lists what the agent sees, numbered per name from near to far ("red
ball 1", "grey closed door 2"; numbers are relative to the current view), the distance
to the wall ahead, what it carries, then the actions available now. High-level actions
expand into primitive moves found by breadth-first search over the visible cells.
"""
from __future__ import annotations

import collections
import contextlib
import io

import gymnasium
import minigrid  # noqa: F401  (registers the BabyAI levels)
import numpy as np

from atlas_jax.envs.base import StepResult, TextEnv

LEVELS = (
    "GoToRedBallGrey-v0", "GoToRedBall-v0", "GoToRedBallNoDists-v0", "GoToObjS6-v1", "GoToLocalS8N7-v0",
    "GoToObjMazeS7-v0", "GoToImpUnlock-v0", "GoToSeqS5R2-v0", "GoToRedBlueBall-v0", "GoToDoor-v0",
    "GoToObjDoor-v0", "Open-v0", "OpenRedDoor-v0", "OpenDoorLoc-v0", "OpenRedBlueDoorsDebug-v0",
    "OpenDoorsOrderN4Debug-v0", "Pickup-v0", "UnblockPickup-v0", "PickupLoc-v0", "PickupDistDebug-v0",
    "PickupAbove-v0", "PutNextLocalS6N4-v0", "PutNextS7N4Carrying-v0", "Unlock-v0", "UnlockLocalDist-v0",
    "KeyInBox-v0", "UnlockPickupDist-v0", "BlockedUnlockPickup-v0", "UnlockToUnlock-v0", "ActionObjDoor-v0",
    "FindObjS7-v0", "KeyCorridorS6R3-v0", "OneRoomS20-v0", "MoveTwoAcrossS8N9-v0", "SynthS5R2-v0",
    "SynthLoc-v0", "SynthSeq-v0", "MiniBossLevel-v0", "BossLevel-v0", "BossLevelNoUnlock-v0",
)
SEEDS = 1000  # task indices 0 .. 40 * SEEDS - 1
EVAL_SEEDS = 10
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
OBJECTS = ("door", "key", "ball", "box", "goal", "lava")
CARRYABLE = ("key", "ball", "box")

INSTRUCTION = (
    "You are an exploration master that wants to finish every goal you are given. Every round I will give you an "
    "observation, and you have to respond an action and your thought based on the observation to finish the given "
    "task. You are placed in a room and you need to accomplish the given goal with actions.\n\nYou can use the "
    "following actions: \n\n- turn right \n\n- turn left \n\n- move forward \n\n- go to <obj> <id> \n\n- pick up "
    "<obj> <id> \n\n- go through <door> <id>: <door> must be an open door. \n\n- toggle and go through <door> <id>: "
    "<door> can be a closed door or a locked door. If you want to open a locked door, you need to carry a key that "
    "is of the same color as the locked door. \n\n- toggle: there is a closed or locked door right in front of you "
    "and you can toggle it.\n\n- drop: put down what you carry on the free cell in front of you.\n\n- check "
    "available actions\nYour response should use the following format:\nThought:\n<Your Thought>\n\nAction:\n"
    "<Your Action>"
)


def state_key(uenv) -> tuple:
    """Everything that decides the future of an episode: pose, carried object, the grid."""
    carrying = (uenv.carrying.type, uenv.carrying.color) if uenv.carrying is not None else None
    return (tuple(int(v) for v in uenv.agent_pos), int(uenv.agent_dir), carrying, uenv.grid.encode().tobytes())


def run_primitives(uenv, primitives: list[int]) -> tuple[float, bool]:
    """Play an action's expansion; stop when the episode ends or a move changes nothing."""
    reward, terminated = 0.0, False
    for primitive in primitives:
        before = state_key(uenv)
        _, reward, terminated, _, _ = uenv.step(primitive)
        if terminated or state_key(uenv) == before:
            break
    return float(reward), bool(terminated)


class View:
    """What the agent sees now: named objects with their cells, and routes to them."""

    def __init__(self, uenv):
        self.uenv = uenv
        grid, vis_mask = uenv.gen_obs_grid()
        size = uenv.agent_view_size
        pos, fwd, right = np.array(uenv.agent_pos), np.array(uenv.dir_vec), np.array(uenv.right_vec)
        self.visible: set[tuple[int, int]] = set()
        found = []
        for i in range(size):
            for j in range(size):
                if not vis_mask[i, j]:
                    continue
                ahead, aside = size - 1 - j, i - size // 2
                cell = tuple(int(v) for v in pos + ahead * fwd + aside * right)
                self.visible.add(cell)
                obj = uenv.grid.get(*cell)
                if obj is not None and obj.type in OBJECTS and (ahead, aside) != (0, 0):
                    found.append((abs(ahead) + abs(aside), ahead, aside, cell, obj))
        found.sort(key=lambda x: (x[0], -x[1], x[2]))
        counts: collections.Counter = collections.Counter()
        self.objects: list[tuple[str, tuple[int, int], int, int, object]] = []  # (label, cell, ahead, aside, obj)
        for _, ahead, aside, cell, obj in found:
            name = self.name(obj)
            counts[name] += 1
            self.objects.append((f"{name} {counts[name]}", cell, ahead, aside, obj))

    @staticmethod
    def name(obj) -> str:
        if obj.type == "door":
            state = "locked" if obj.is_locked else "open" if obj.is_open else "closed"
            return f"{obj.color} {state} door"
        return f"{obj.color} {obj.type}"

    def passable(self, cell) -> bool:
        if cell not in self.visible:
            return False
        obj = self.uenv.grid.get(*cell)
        return obj is None or obj.type in ("goal", "floor") or (obj.type == "door" and obj.is_open)

    def route(self, target, arrive: bool) -> list[int] | None:
        """Fewest primitive moves to stand on ``target`` (arrive) or to face it from next door."""
        start = (tuple(int(v) for v in self.uenv.agent_pos), int(self.uenv.agent_dir))
        vectors = ((1, 0), (0, 1), (-1, 0), (0, -1))
        previous = {start: None}
        queue = collections.deque([start])
        while queue:
            state = queue.popleft()
            (x, y), d = state
            ahead = (x + vectors[d][0], y + vectors[d][1])
            if (arrive and (x, y) == target) or (not arrive and ahead == target):
                moves = []
                while previous[state] is not None:
                    state, move = previous[state]
                    moves.append(move)
                return moves[::-1]
            for move, nxt in ((FORWARD, (ahead, d)), (LEFT, ((x, y), (d - 1) % 4)), (RIGHT, ((x, y), (d + 1) % 4))):
                if move == FORWARD and not self.passable(ahead):
                    continue
                if nxt not in previous:
                    previous[nxt] = (state, move)
                    queue.append(nxt)
        return None

    def front(self):
        cell = tuple(int(v) for v in np.array(self.uenv.agent_pos) + np.array(self.uenv.dir_vec))
        return cell, self.uenv.grid.get(*cell)

    def wall_ahead(self) -> int | None:
        """Steps to the wall straight ahead, if nothing else stands in between and it is in view."""
        x, y = (int(v) for v in self.uenv.agent_pos)
        dx, dy = (int(v) for v in self.uenv.dir_vec)
        for steps in range(1, self.uenv.agent_view_size):
            cell = (x + steps * dx, y + steps * dy)
            obj = self.uenv.grid.get(*cell) if cell in self.visible else None
            if cell not in self.visible or (obj is not None and obj.type != "wall" and not self.passable(cell)):
                return None
            if obj is not None and obj.type == "wall":
                return steps
        return None

    def describe(self) -> str:
        parts = []
        if self.objects:
            parts.append("In front of you in this room, you can see several objects:")
            for label, _, ahead, aside, _ in self.objects:
                if aside == 0:
                    where = f"right in front of you {ahead} steps away"
                elif ahead == 0:
                    where = f"{abs(aside)} steps to your {'right' if aside > 0 else 'left'}"
                else:
                    side = "right" if aside > 0 else "left"
                    where = f"{ahead} steps in front of you and {abs(aside)} steps to your {side}"
                parts.append(f"There is a {label} {where}.")
        else:
            parts.append("You cannot see any objects within sight.")
        wall = self.wall_ahead()
        parts.append("The room has walls around you." + (f" You are facing a wall {wall} steps away." if wall else ""))
        carrying = self.uenv.carrying
        parts.append(f"You are carrying a {carrying.color} {carrying.type}." if carrying else
                     "You are not carrying anything.")
        return " ".join(parts)

    def actions(self) -> dict[str, list[int]]:
        """Available text actions and their primitive expansions (insertion order = listing order)."""
        carrying = self.uenv.carrying
        front_cell, front_obj = self.front()
        offered: dict[str, list[int]] = {"turn left": [LEFT], "turn right": [RIGHT]}
        if self.passable(front_cell) or (front_obj is not None and front_obj.type == "door" and front_obj.is_open):
            offered["move forward"] = [FORWARD]
        for label, cell, _, _, obj in self.objects:
            if obj.type == "goal":
                moves = self.route(cell, arrive=True)
                if moves is not None:
                    offered["go to goal"] = moves
                continue
            moves = self.route(cell, arrive=False)
            if moves is None:
                continue
            offered[f"go to {label}"] = moves
            if obj.type in CARRYABLE and carrying is None:
                offered[f"pick up {label}"] = moves + [PICKUP]
            if obj.type == "door" and obj.is_open:
                offered[f"go through {label}"] = moves + [FORWARD, FORWARD]
            elif obj.type == "door" and (not obj.is_locked or (carrying is not None and carrying.type == "key"
                                                                and carrying.color == obj.color)):
                offered[f"toggle and go through {label}"] = moves + [TOGGLE, FORWARD, FORWARD]
        if front_obj is not None and front_obj.type in ("door", "box"):
            offered["toggle"] = [TOGGLE]
        if carrying is not None and front_obj is None and front_cell in self.visible:
            offered["drop"] = [DROP]
        offered["check available actions"] = []
        return offered


def _error_for(action: str, view: View) -> str:
    if action == "drop":
        return ("You cannot drop the object, as you are not carrying anything." if view.uenv.carrying is None else
                "You cannot drop the object, as there is already an object in front of you.")
    if action == "move forward":
        return "There is a barrier in front of you, you can't move forward."
    if action.startswith(("go to ", "pick up ", "go through ", "toggle and go through ")):
        return f"You cannot {action}: no such object in sight or no path leading to it."
    return "The action is not recognized. Please check valid actions."


class BabyAIEnv(TextEnv):
    name = "babyai"
    instruction = INSTRUCTION
    default_max_steps = 20

    def __init__(self, max_steps: int | None = None):
        super().__init__(max_steps)
        self._games: dict[str, gymnasium.Env] = {}
        self.uenv = None
        self.offered: dict[str, list[int]] = {}

    def num_tasks(self) -> int:
        return len(LEVELS) * SEEDS

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return "eval" if task_index // len(LEVELS) < EVAL_SEEDS else "train"

    @staticmethod
    def level_and_seed(task_index: int) -> tuple[str, int]:
        return LEVELS[task_index % len(LEVELS)], task_index // len(LEVELS)

    def _reset(self, task_index: int) -> str:
        level, seed = self.level_and_seed(task_index)
        if level not in self._games:
            self._games[level] = gymnasium.make(f"BabyAI-{level}").unwrapped
        self.uenv = self._games[level]
        with contextlib.redirect_stdout(io.StringIO()):  # level generation prints "Sampling rejected"
            self.uenv.reset(seed=seed)
        self.uenv.max_steps = 10**9  # the text step limit governs; keeps success reward from shrinking to 0
        self.goal = self.uenv.mission
        return f"Your goal: {self.goal}\n" + self._observe()

    def _observe(self, prefix: str = "") -> str:
        view = View(self.uenv)
        self.offered = view.actions()
        listed = ", ".join(f'"{a}"' for a in self.offered)
        return f"{prefix}{view.describe()}\nAvailable actions: [{listed}]"

    def _act(self, action: str) -> StepResult:
        action = " ".join(action.lower().strip().rstrip(".").split())
        if action not in self.offered:
            return StepResult(_error_for(action, View(self.uenv)) + self._available(), 0.0, False, False,
                              {"invalid": True})
        if action == "check available actions":
            return StepResult("You can take the following actions: " + ", ".join(self.offered) + self._available(),
                              0.0, False, False)
        reward, terminated = run_primitives(self.uenv, self.offered[action])
        success = bool(terminated and reward > 0)
        observation = self._observe()
        if terminated:
            observation += "\nThe task is completed." if success else "\nThe task has failed."
        return StepResult(observation, float(reward), terminated, success)

    def _available(self) -> str:
        return "\nAvailable actions: [" + ", ".join(f'"{a}"' for a in self.offered) + "]"
