"""BabyAI expert: minigrid's BabyAI bot, its primitive plan mapped onto the text actions.

The bot is run to the end on a copy of the episode first (under a time and a move limit:
its ``replan`` can loop forever on some seeds). Then, at each turn, every offered text
action is tried on a copy of the environment and the one whose outcome lies furthest
along the bot's plan is taken. The bot's subgoal behind those moves says *why*, which the
Thought puts into words. The mistake hooks (see ``experts.Recovering``) pick an action the
environment does not offer now, so AgentGym's server answers with an error and nothing
changes: going through a closed door, moving forward into a barrier, or an object number
not in view ("The action is not recognized").
"""
from __future__ import annotations

import contextlib
import copy
import io
import signal
import sys
import threading

from minigrid.utils.baby_ai_bot import BabyAIBot

from atlas_jax.envs.babyai import NOT_RECOGNIZED, BabyAIEnv, run_primitives, state_key
from atlas_jax.envs.base import ExpertFailed, format_response


class NoPlan(ExpertFailed):
    """The bot found no successful plan, or the text actions cannot follow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise NoPlan after ``seconds`` of this process's CPU time (SIGPROF; only in the main thread,
    elsewhere no limit). CPU time, not wall time: which episodes a loaded machine keeps must not
    differ from a quiet one's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise NoPlan("the bot timed out", f"{seconds:g} s")

    def unraisable(info):  # the repeat below makes a swallowed alarm harmless: do not print it
        if not isinstance(info.exc_value, NoPlan):
            previous_hook(info)

    previous = signal.signal(signal.SIGPROF, on_alarm)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    # The alarm repeats every 0.2 s until cleared: an exception raised while Python runs a callback
    # that swallows it (e.g. JAX's gc callback: "Exception ignored in ...") would otherwise leave a
    # looping replan() with no limit at all.
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.2)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
        sys.unraisablehook = previous_hook


def _describe(datum) -> str:
    if hasattr(datum, "type") and hasattr(datum, "color") and not hasattr(datum, "loc"):
        return f"the {datum.color} {datum.type}"  # a WorldObj
    if hasattr(datum, "type"):  # an ObjDesc from the instruction
        return "the " + " ".join(w for w in (datum.color, datum.type) if w)
    return "an unexplored part of the map"


def bot_plan(uenv, max_moves: int = 300, seconds: float = 10.0) -> tuple[list[tuple], list[tuple]]:
    """States visited by the bot on a copy of ``uenv`` and, per move, (subgoal kind, reason, datum)."""
    env = copy.deepcopy(uenv)
    states, motives = [state_key(env)], []
    with time_limit(seconds), contextlib.redirect_stdout(io.StringIO()):
        bot = BabyAIBot(env)
        for _ in range(max_moves):
            try:
                action = bot.replan()
            except NoPlan:
                raise
            except Exception as e:  # the bot asserts on situations it cannot handle
                raise NoPlan("the bot failed", f"{type(e).__name__}: {e}") from e
            if action == env.actions.done:
                raise NoPlan("the bot declared the mission done but the level did not end")
            top = bot.stack[-1] if bot.stack else None
            motives.append((type(top).__name__ if top else "", getattr(top, "reason", None),
                            getattr(top, "datum", None)))
            _, reward, terminated, _, _ = env.step(action)
            states.append(state_key(env))
            if terminated:
                if reward <= 0:
                    raise NoPlan("the bot's plan ended the level in failure")
                return states, motives
    raise NoPlan("the bot exceeded its move limit", f"{max_moves} moves")


class BabyAIExpert:
    """``act(observation) -> response`` for the episode ``env`` was just reset to."""

    def __init__(self, env: BabyAIEnv, seconds: float = 10.0):
        self.env = env
        self.states, self.motives = bot_plan(env.uenv, seconds=seconds)
        self.position = 0
        self.turn = 0
        self.seen_targets: set[str] = set()
        self.intended = ""  # the action a mistake stood in for (its recovery names it)
        first = [m for m in self.motives if m[0] == "GoNextToSubgoal" and m[1] is None]
        self.target = _describe(first[0][2]) if first else None

    def _advance(self, action: str) -> int:
        trial = copy.deepcopy(self.env.uenv)
        run_primitives(trial, self.env.offered[action], self.env.image)
        key = state_key(trial)
        for k in range(len(self.states) - 1, self.position, -1):
            if self.states[k] == key:
                return k
        return -1

    def _best(self) -> tuple[str, int]:
        best, best_k = None, -1
        for action in self.env.offered:
            if action == "check available actions":
                continue
            k = self._advance(action)
            if k > best_k:
                best, best_k = action, k
        if best is None:
            raise NoPlan("no text action follows the bot's plan", f"at move {self.position}")
        return best, best_k

    def act(self, observation: str) -> str:
        return format_response(*self.respond(observation))

    def respond(self, observation: str) -> tuple[str, str]:
        best, best_k = self._best()
        thought = self._thought(best, best_k)
        self.position = best_k
        self.turn += 1
        return thought, best

    # -- mistake hooks -------------------------------------------------------------
    _VERBS = ("toggle and go through ", "go through ", "go to ", "pickup ")

    def _wrong(self, best: str) -> str | None:
        if best.startswith("toggle and go through "):
            return "go through " + best[len("toggle and go through "):]
        if "move forward" not in self.env.offered:
            return "move forward"
        verb = next((v for v in self._VERBS if best.startswith(v)), None)
        if verb is None or best == "go to goal":
            return None
        name = best[len(verb):].rsplit(" ", 1)[0]
        in_view = sum(label.rsplit(" ", 1)[0] == name for label in self._labels())
        return f"{verb}{name} {in_view + 1}"  # a number one past those in view

    def mistake(self, observation: str) -> tuple[str, str] | None:
        """The action the plan calls for, gone wrong; None when no plausible slip fits."""
        best, best_k = self._best()
        wrong = self._wrong(best)
        if wrong is None or wrong in self.env.offered:
            return None
        self.intended = best
        thought = self._thought(wrong, best_k)
        self.turn += 1
        return thought, wrong

    def recovery(self, action: str, observation: str) -> str:
        if not observation.startswith(("You cannot", "There is a barrier", NOT_RECOGNIZED)):
            raise NoPlan("the mistake was not rejected", action)  # the runner replays without it
        if action == "move forward":
            uenv = self.env.uenv
            blocker = uenv.grid.get(*(int(v) for v in uenv.front_pos))
            what = "a wall" if blocker is None or blocker.type == "wall" else f"the {blocker.color} {blocker.type}"
            return f"Moving forward failed: {what} right in front of me blocks the way."
        target = next(action[len(v):] for v in self._VERBS if action.startswith(v))
        if action.startswith("go through ") and self.intended.startswith("toggle and go through "):
            return (f"Going through the {target} failed: it is not open, so I cannot walk through it. I have to "
                    f"toggle it open first.")
        intended = next(self.intended[len(v):] for v in self._VERBS if self.intended.startswith(v))
        return (f"That failed: there is no {target} in view. Object numbers count only what I see right now, "
                f"and the one I mean is {intended}.")

    def _labels(self) -> list[str]:
        """The objects in view as the observation numbers them ("red ball 1"), near to far."""
        counts: dict[str, int] = {}
        labels = []
        for thing in self.env.reading.things:
            if "wall" not in thing.name:
                counts[thing.name] = counts.get(thing.name, 0) + 1
                labels.append(f"{thing.name} {counts[thing.name]}")
        return labels

    def _visible_targets(self) -> list[str]:
        words = set((self.target or "").split()[1:])
        return [label for label in self._labels() if words and words <= set(label.split())]

    def _thought(self, action: str, k: int) -> str:
        kind, reason, datum = self.motives[self.position]
        finishing = k == len(self.states) - 1
        visible = self._visible_targets()
        newly_seen = [t for t in visible if t not in self.seen_targets]
        self.seen_targets.update(visible)
        parts = []
        if self.turn == 0:
            parts.append(f"My goal is to {self.env.goal}.")
            if visible:
                parts.append(f"I can already see {visible[0]}, which matches {self.target} in my goal.")
            elif self.target:
                parts.append(f"I cannot see {self.target} yet, so I first have to find it.")
        elif newly_seen and self.target:
            parts.append(f"Now I can see {newly_seen[0]}: that is {self.target} I was looking for.")
        parts.append(self._why(action, kind, reason, datum))
        if finishing:
            parts.append("This should complete the goal.")
        return " ".join(parts)

    def _why(self, action: str, kind: str, reason, datum) -> str:
        what = _describe(datum)
        if reason == "Explore" or kind == "ExploreSubgoal":
            missing = f"{self.target} is not in sight" if self.target else "I have not seen what I need yet"
            if "door" in action:
                return f"{missing[0].upper()}{missing[1:]}, so I {action} to search beyond it."
            return f"{missing[0].upper()}{missing[1:]}; I {action} to look at another part of the map."
        if action.startswith("pickup"):
            words = "pick up" + action[len("pickup"):]
            if reason == "Unlock" or "key" in action and kind != "PickupSubgoal":
                return f"I need this key to unlock a door, so I {words}."
            return f"I {words}, since my goal needs me to carry it."
        if action.startswith(("toggle and go through", "go through")):
            return f"The way on leads through this door, so I {action}."
        if action == "toggle":
            return "The door in front of me is closed; I toggle it to open it."
        if action == "drop":
            return ("I drop what I carry here: it has to be placed next to the target." if reason == "PutNext" or
                    kind == "DropSubgoal" else "I drop what I carry to free my hands for the next step.")
        if action.startswith("go to"):
            if reason == "Open":
                return f"I {action}, because I have to open it."
            if reason == "PutNext":
                return f"I {action}, since I must put what I carry next to it."
            return f"I {action}, because my goal requires reaching {what}."
        return f"I {action} to head towards {what}."
