"""AgentGym's reading of a BabyAI state: the view in words and the text actions offered.

This reproduces the behaviour of AgentGym's BabyAI server (agentenv-babyai at commit 3ef9235)
rule for rule, its quirks included, because trajectories and scores must mean the same
thing here as there (see the README's BabyAI notes):

- Objects come from the agent's egocentric image, scanned far row to near row, left to
  right, then stably sorted by Manhattan distance; a name's number counts in that order.
- Only walls and boxes on the line ahead are "barriers": "facing a wall/box N steps away"
  and whether "move forward" is offered ignore balls, keys and closed doors in the way.
- Routes come from a breadth-first search that marks a state visited when it is taken off
  the queue, not when it is put on, and lets a later discovery overwrite a state's parent;
  so a route is not always a shortest one. Doors never block a route, even closed ones,
  and the search box includes one line of cells behind the agent.
- An object's number in an action ("go to red ball 2") counts only the reachable ones.
"""
from __future__ import annotations

import dataclasses

import numpy as np

LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
VECTORS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # minigrid's direction index -> (dx, dy)
TYPES = {2: "wall", 4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal", 9: "lava"}  # minigrid's type ids
COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
DOOR_STATES = ("open", "closed", "locked")
BLOCKING = ("wall", "box", "lava", "ball", "key")  # a name containing one of these blocks a route


@dataclasses.dataclass
class Thing:
    name: str  # "red ball", "grey closed door", "grey wall"
    cell: tuple[int, int]
    dis: int  # Manhattan distance from the agent


@dataclasses.dataclass
class Reading:
    description: str
    actions: dict[str, list[int]]  # text action -> primitive moves, in the order they are listed
    errors: dict[str, str]  # text action not offered now -> the message that rejects it
    things: list[Thing]


def scan(uenv, image) -> tuple[list[Thing], list[tuple[str, int]], tuple[range, range]]:
    """Visible objects (walls included), barriers ahead as (kind, distance), and the search box."""
    size = uenv.agent_view_size
    pos = np.array(uenv.agent_pos)
    fwd, right = np.array(uenv.dir_vec), np.array(uenv.right_vec)
    top_left = pos + fwd * (size - 1) - right * (size // 2)
    corner = top_left + size * (right - fwd)
    box = tuple(range(c, t + 1) if c < t else range(t, c) for c, t in zip(corner, top_left))
    things, barriers = [], []
    for j in range(size):
        for i in range(size):
            cell = top_left - fwd * j + right * i
            dis = int(abs(pos - cell).sum())
            if cell[0] < 0 or cell[1] < 0 or dis == 0:
                continue
            kind = TYPES.get(int(image[i, j, 0]))
            if kind is None:
                continue
            color = COLORS[image[i, j, 1]]
            name = f"{color} {DOOR_STATES[image[i, j, 2]]} door" if kind == "door" else f"{color} {kind}"
            things.append(Thing(name, (int(cell[0]), int(cell[1])), dis))
            offset = cell - pos
            if kind in ("box", "wall") and fwd[0] * offset[1] - fwd[1] * offset[0] == 0:
                barriers.append((kind, int(fwd @ offset)))
    things.sort(key=lambda t: t.dis)
    barriers.sort(key=lambda b: b[1])
    return things, barriers, box


def find_path(start, start_dir: int, goal, blocked: set, has_things: bool, box, arrive: bool) -> list[int] | None:
    """Primitive moves to stand on ``goal`` (arrive) or to face it from the next cell."""
    queue = [(start, start_dir)]
    taken, parent = set(), {}
    while queue:
        pos, d = state = queue.pop(0)
        taken.add(state)
        ahead = (pos[0] + VECTORS[d][0], pos[1] + VECTORS[d][1])
        if (pos == goal) if arrive else (ahead == goal):
            moves = []
            while state != (start, start_dir):
                state, move = parent[state]
                moves.append(move)
            return moves[::-1]
        for move, new in ((FORWARD, (ahead, d)), (LEFT, (pos, (d - 1) % 4)), (RIGHT, (pos, (d + 1) % 4))):
            cell = new[0]
            if has_things and (cell[0] not in box[0] or cell[1] not in box[1] or new in taken or cell in blocked):
                continue
            queue.append(new)
            parent[new] = (state, move)
    return None


def describe(uenv, things: list[Thing], barriers) -> str:
    pos, d = uenv.agent_pos, uenv.agent_dir
    if things:
        text = "In front of you in this room, you can see several objects: "
        counts: dict[str, int] = {}
        for t in things:
            if "wall" in t.name:
                continue
            ahead = VECTORS[d][0] * (t.cell[0] - pos[0]) + VECTORS[d][1] * (t.cell[1] - pos[1])
            aside = VECTORS[(d + 1) % 4][0] * (t.cell[0] - pos[0]) + VECTORS[(d + 1) % 4][1] * (t.cell[1] - pos[1])
            if aside == 0:
                where = f"right in front of you {ahead} steps away. "
            else:
                where = f"{ahead} steps in front of you and {abs(aside)} steps to your {'right' if aside > 0 else 'left'}. "
            counts[t.name] = counts.get(t.name, 0) + 1
            text += f"There is a {t.name} {counts[t.name]} {where} "
    else:
        text = "You cannot see any objects within sight."
    text += "The room has walls around you. "
    if barriers:
        text += f"You are facing a {barriers[0][0]} {barriers[0][1]} steps away. "
    carrying = uenv.carrying
    return text + (f"You are carrying a {carrying.color} {carrying.type}." if carrying is not None
                   else "You are not carrying anything.")


def read(uenv, image) -> Reading:
    """What AgentGym's server shows and offers for ``uenv`` and its last observation image
    (the one minigrid returned; at reset it can be stale, e.g. PutNextS7N4Carrying's shows
    the carried object still on the floor)."""
    things, barriers, box = scan(uenv, image)
    blocked = {t.cell for t in things if any(w in t.name for w in BLOCKING)}  # barriers are among them
    pos, d = tuple(int(v) for v in uenv.agent_pos), int(uenv.agent_dir)

    def path(goal, arrive):
        return find_path(pos, d, goal, blocked, bool(things), box, arrive)

    actions: dict[str, list[int]] = {"turn left": [LEFT], "turn right": [RIGHT]}
    errors: dict[str, str] = {}
    if not barriers or barriers[0][1] > 1:
        actions["move forward"] = [FORWARD]
    else:
        errors["move forward"] = "There is a barrier in front of you, you can't move forward."
    carrying = uenv.carrying
    _numbered(actions, errors, "pickup", [t for t in things if carrying is None and
                                          not any(w in t.name for w in ("wall", "door", "goal"))], path, [PICKUP])
    if carrying is not None:
        front = (pos[0] + VECTORS[d][0], pos[1] + VECTORS[d][1])
        if any(t.cell == front and any(w in t.name for w in BLOCKING) for t in things):
            errors["drop"] = "You cannot drop the object, as there is already an object in front of you."
        else:
            actions["drop"] = [DROP]
    else:
        errors["drop"] = "You cannot drop the object, as you are not carrying anything."
    _doors(actions, errors, things, carrying, path)
    for t in things:
        if "goal" in t.name:
            moves = path(t.cell, True)
            if moves is not None:
                actions["go to goal"] = moves
            else:
                errors["go to goal"] = "You cannot go to the goal, as there is no path leading to it."
    _numbered(actions, errors, "go to", [t for t in things if "wall" not in t.name and "goal" not in t.name], path, [])
    actions["check available actions"] = []
    return Reading(describe(uenv, things, barriers), actions, errors, things)


def _numbered(actions, errors, verb: str, targets: list[Thing], path, suffix: list[int]) -> None:
    """``<verb> <name> <n>`` for each reachable target, n counting reachable ones of that name."""
    counts: dict[str, int] = {}
    for t in targets:
        moves = path(t.cell, False)
        n = counts.get(t.name, 0) + 1
        if moves is not None:
            counts[t.name] = n
            actions[f"{verb} {t.name} {n}"] = moves + suffix
        else:
            errors[f"{verb} {t.name} {n}"] = f"You cannot {verb} {t.name} {n}, as there is no path leading to it."


def _doors(actions, errors, things: list[Thing], carrying, path) -> None:
    counts: dict[str, int] = {}
    for t in things:
        if "door" not in t.name:
            continue
        counts[t.name] = counts.get(t.name, 0) + 1
        label = f"{t.name} {counts[t.name]}"
        if "open door" in t.name:
            moves = path(t.cell, True)
            if moves is not None:
                actions[f"go through {label}"] = moves
            else:
                errors[f"go through {label}"] = f"You cannot go through {label}, as there is no path leading to it."
            continue
        if "locked door" in t.name:
            if carrying is None or carrying.type != "key":
                errors[f"toggle and go through {label}"] = (
                    f"You cannot toggle and go through {label}, as you are not carrying a key.")
                continue
            if carrying.color != t.name.split(" ")[0]:
                errors[f"toggle and go through {label}"] = (
                    f"You cannot toggle and go through {label}, as the color of the key you are carrying does not "
                    f"match the color of door.")
                continue
        moves = path(t.cell, False)
        if moves is not None:
            actions[f"toggle and go through {label}"] = moves + [TOGGLE, FORWARD]  # stops in the doorway
        else:  # AgentGym prints its whole door counter here
            errors[f"toggle and go through {label}"] = (
                f"You cannot toggle and go through {t.name} {counts!r}, as there is no path leading to it.")
        if moves == []:
            actions["toggle"] = [TOGGLE]
        if "closed door" in t.name:
            errors[f"go through {label}"] = (f"You cannot go through {label}, as it is closed. You should toggle it "
                                              f"first.")
