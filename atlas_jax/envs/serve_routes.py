"""The routes of AgentGym's environment servers (agentenv-babyai, -textcraft, -sciworld), served
from our in-process environments.

Each AgentGym server has its own routes, request bodies and response fields; this module
describes them as data (:data:`ROUTES`) and implements them on an :class:`InstanceTable` of our
environments, stepping with the server side of the env (``env.reset(data_idx)`` and
``env.step_action(action)``: no client parsing, no step limit, as AgentGym's ``/step``).
Failures inside an operation are answered as AgentGym answers them: HTTP 200 with
``{"error": "..."}`` (``close`` answers ``false`` for an unknown id).

Behaviour reproduced on purpose, because AgentGym's clients and evaluators see it:
- BabyAI and SciWorld refuse ``/step`` once an episode is done ("... has finished."); TextCraft does not.
- BabyAI's ``score`` is the running sum of step rewards; SciWorld's ``reward`` is the change of ``score``.
- TextCraft's ``/create`` already resets, to task ``id`` (modulo the number of tasks, as its
  ``data_idx % len(goals)``); its ``/commands`` and ``/goal`` routes exist but their handlers do
  not (AgentGym answers HTTP 500), so we answer 500 too.
Not served: a TextCraft ``/create`` with custom ``commands``/``goal`` (an error answer), and the
visualisation-only routes (``/render``, ``/step_visual``, SciWorld's ``/object_tree``,
``/state``, ...), which answer ``{"error": ...}``.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

from atlas_jax.envs.base import TextEnv

# request field types, as AgentGym's pydantic models declare them: name -> (type, default or REQUIRED)
REQUIRED = object()
ID = {"id": (int, REQUIRED)}
STEP = {"id": (int, REQUIRED), "action": (str, REQUIRED)}
RESET = {"id": (int, REQUIRED), "data_idx": (int, REQUIRED)}
RESET_DEFAULT0 = {"id": (int, REQUIRED), "data_idx": (int, 0)}
TEXTCRAFT_CREATE = {"commands": (str, None), "goal": (str, None)}
HELLO = {"babyai": "This is environment BabyAI.", "textcraft": "This is environment TextCraft.",
         "sciworld": "This is environment ScienceWorld."}


class RouteError(Exception):
    """An HTTP-level answer other than 200 (e.g. AgentGym's 500 on a route without handler)."""

    def __init__(self, status: int, body: Any):
        super().__init__(str(body))
        self.status, self.body = status, body


@dataclasses.dataclass
class Instance:
    env: TextEnv
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    reset_done: bool = False
    done: bool = False
    score: float = 0.0
    reward: float = 0.0
    first_observation: str = ""
    observation: str = ""  # the last observation returned (reset or step)


class InstanceTable:
    """Environment instances by id. Ids count up from 0 and are never reused (as AgentGym's);
    closing an instance drops it (memory is bounded by ``max_instances`` open at once)."""

    def __init__(self, make_env: Callable[[], TextEnv], max_instances: int):
        self.make_env, self.max_instances = make_env, max_instances
        self._lock = threading.Lock()
        self._next_id = 0
        self._instances: dict[int, Instance] = {}
        self._reserved = 0  # creations under way (counted against the limit)

    def __len__(self) -> int:
        return len(self._instances)

    def create(self) -> tuple[int, Instance]:
        with self._lock:
            if len(self._instances) + self._reserved >= self.max_instances:
                raise RouteError(503, {"error": f"too many environment instances open ({self.max_instances}); "
                                                f"close some first"})
            self._reserved += 1
            idx = self._next_id
            self._next_id += 1
        try:
            instance = Instance(self.make_env())  # slow (SciWorld starts a JVM): outside the table lock
        finally:
            with self._lock:
                self._reserved -= 1
        with self._lock:
            self._instances[idx] = instance
        return idx, instance

    def get(self, idx: int) -> Instance:
        with self._lock:
            instance = self._instances.get(idx)
        if instance is None:
            raise ValueError(f"The id {idx} is not valid.")
        return instance

    def pop(self, idx: int) -> Instance | None:
        with self._lock:
            return self._instances.pop(idx, None)

    def close_all(self) -> None:
        with self._lock:
            instances, self._instances = list(self._instances.values()), {}
        for instance in instances:
            with instance.lock:
                instance.env.close()


def _error(e: Exception) -> dict:
    return {"error": str(e)}


class EnvService:
    """One AgentGym server's operations; ``handle(route, fields)`` answers one request."""

    def __init__(self, env_name: str, table: InstanceTable):
        self.env_name, self.table = env_name, table

    # -- shared pieces -------------------------------------------------------------
    def _checked(self, idx: int, need_reset: bool = True, refuse_done: bool = True) -> Instance:
        instance = self.table.get(idx)
        if need_reset and not instance.reset_done:
            raise ValueError(f"The environment {idx} has not been reset yet; call /reset first.")
        if refuse_done and instance.done:
            raise ValueError(f"The task with environment {idx} has finished.")
        return instance

    def _reset(self, instance: Instance, data_idx: int) -> None:
        env = instance.env
        observation = env.reset(data_idx)
        instance.reset_done, instance.done = True, False
        instance.score = instance.reward = 0.0
        instance.first_observation = instance.observation = observation

    def _step(self, instance: Instance, action: str):
        result = instance.env.step_action(action)
        instance.observation, instance.done = result.observation, bool(result.done)
        return result

    def close(self, idx: int) -> bool:
        instance = self.table.pop(idx)
        if instance is None:
            return False
        with instance.lock:
            instance.env.close()
        return True

    def _locked(self, idx: int, fn, **checks):
        """Run ``fn(instance)`` under the instance's lock; failures become ``{"error": ...}``."""
        try:
            instance = self.table.get(idx)
            with instance.lock:
                return fn(self._checked(idx, **checks))
        except RouteError:
            raise
        except Exception as e:  # noqa: BLE001 - AgentGym answers any failure as {"error": str(e)}
            return _error(e)

    # -- per-environment routes ----------------------------------------------------
    def create(self, fields: dict) -> Any:
        if self.env_name == "textcraft" and (fields.get("commands") is not None or fields.get("goal") is not None):
            return {"error": "atlas-jax serve-env: custom TextCraft commands/goal are not supported; "
                             "create without them and reset with a data_idx"}
        try:
            idx, instance = self.table.create()
        except RouteError:
            raise
        except Exception as e:  # noqa: BLE001
            return _error(e)
        if self.env_name != "textcraft":
            return {"id": idx}

        def first(inst: Instance) -> dict:
            self._reset(inst, idx % inst.env.num_tasks())
            return {"id": idx, "observation": inst.observation, "done": False, "reward": 0}

        return self._locked(idx, first, need_reset=False, refuse_done=False)

    def reset(self, fields: dict) -> Any:
        idx, data_idx = fields["id"], fields["data_idx"]

        def run(inst: Instance) -> dict:
            if self.env_name == "textcraft":
                self._reset(inst, data_idx % inst.env.num_tasks())
                return {"id": idx, "observation": inst.observation, "done": False, "reward": 0}
            self._reset(inst, data_idx)
            if self.env_name == "babyai":
                return {"observation": inst.observation, "reward": 0.0, "score": 0.0, "deleted": False, "done": False}
            description, _, look = inst.observation.partition("\n")
            description = getattr(inst.env, "task_description", None) or description
            look = inst.observation[len(description) + 1:] if inst.observation.startswith(description + "\n") else look
            task_name, var_num = _task_and_variation(inst.env, data_idx)
            inst.score = _sciworld_score(inst.env, 0)
            return {"task_name": task_name, "var_num": var_num, "task_description": description,
                    "observation": look, "reward": 0, "score": inst.score, "deleted": False, "done": False}

        return self._locked(idx, run, need_reset=False, refuse_done=False)

    def step(self, fields: dict) -> Any:
        idx, action = fields["id"], fields["action"]

        def run(inst: Instance) -> dict:
            result = self._step(inst, action)
            if self.env_name == "babyai":
                inst.reward = float(result.reward)
                inst.score += inst.reward
                return {"observation": result.observation, "reward": inst.reward, "score": inst.score,
                        "done": inst.done}
            if self.env_name == "textcraft":
                reward = int(result.reward) if float(result.reward).is_integer() else float(result.reward)
                inst.reward = reward
                return {"observation": result.observation, "reward": reward, "done": inst.done}
            score = _sciworld_score(inst.env, result.info.get("score", round(100 * result.reward)))
            reward, inst.score = score - inst.score, score
            return {"observation": result.observation, "reward": reward, "score": score, "done": inst.done}

        return self._locked(idx, run, refuse_done=self.env_name != "textcraft")

    def observation(self, fields: dict) -> Any:
        idx = fields["id"]

        def run(inst: Instance) -> Any:
            if self.env_name != "babyai":
                return inst.observation
            if not inst.reset_done:
                return {"observation": "Environment not initialized", "reward": 0, "score": 0, "done": False,
                        "deleted": False}
            observation = inst.observation
            goal_line = inst.first_observation.split("\n", 1)[0]
            if observation is not inst.first_observation and goal_line.startswith("Your goal:"):
                observation = goal_line + "\n" + observation
            return {"observation": observation, "reward": inst.reward, "score": inst.score, "done": inst.done,
                    "deleted": False}

        # as AgentGym's: BabyAI's and SciWorld's refuse a finished task, TextCraft's does not check
        return self._locked(idx, run, need_reset=self.env_name != "babyai",
                            refuse_done=self.env_name != "textcraft")

    def detail(self, fields: dict) -> Any:
        def run(inst: Instance) -> dict:
            if self.env_name == "textcraft":
                return {"observation": inst.observation, "done": inst.done, "reward": inst.reward, "deleted": False}
            return {"deleted": False, "done": inst.done, "observation": inst.observation, "reward": inst.reward,
                    "score": inst.score}

        return self._locked(fields["id"], run, need_reset=False, refuse_done=self.env_name == "sciworld")

    def goals(self, fields: dict) -> Any:
        def run(inst: Instance) -> dict:
            progress = getattr(inst.env, "goal_progress", None)
            if progress is None:
                raise ValueError("goal progress is not available from atlas-jax serve-env")
            return {"goals": progress()}

        return self._locked(fields["id"], run)

    def action_hint(self, fields: dict) -> Any:
        def run(inst: Instance) -> dict:
            hint = getattr(inst.env, "action_hint", None)
            if hint is None:
                raise ValueError("action hints are not available from atlas-jax serve-env")
            return hint()

        return self._locked(fields["id"], run)

    def handle(self, name: str, fields: dict) -> Any:
        if name == "hello":
            return HELLO[self.env_name]
        if name == "close":
            closed = self.close(fields["id"])
            if not closed and self.env_name == "sciworld":  # its close does not catch the KeyError
                raise RouteError(500, "Internal Server Error")
            return closed
        if name == "no_handler":  # AgentGym's route exists, its handler does not: FastAPI answers 500
            raise RouteError(500, "Internal Server Error")
        if name == "unsupported":
            return {"error": "atlas-jax serve-env does not serve this route (visualisation only in AgentGym)"}
        return getattr(self, name)(fields)


def _task_and_variation(env: TextEnv, data_idx: int) -> tuple[Any, Any]:
    split = getattr(env, "task_and_variation", None)
    return split(data_idx) if split is not None else (None, None)


def _sciworld_score(env: TextEnv, fallback: float) -> Any:
    """The simulator's score (0-100) where the env exposes it, else ``fallback``."""
    score = getattr(env, "score", None)
    value = score() if callable(score) else fallback
    return int(value) if float(value).is_integer() else value


# (method, path) -> (operation, body fields (POST) or query fields (GET)) per environment
_COMMON = {("GET", "/"): ("hello", None), ("POST", "/step"): ("step", STEP), ("POST", "/close"): ("close", ID),
           ("GET", "/observation"): ("observation", ID)}
ROUTES: dict[str, dict[tuple[str, str], tuple[str, dict | None]]] = {
    "babyai": {**_COMMON, ("POST", "/create"): ("create", None), ("POST", "/reset"): ("reset", RESET),
               ("POST", "/render"): ("unsupported", ID)},
    "textcraft": {**_COMMON, ("POST", "/create"): ("create", TEXTCRAFT_CREATE),
                  ("POST", "/reset"): ("reset", RESET_DEFAULT0), ("GET", "/commands"): ("no_handler", ID),
                  ("GET", "/goal"): ("no_handler", ID), ("GET", "/detail"): ("detail", ID)},
    "sciworld": {**_COMMON, ("POST", "/create"): ("create", None), ("POST", "/reset"): ("reset", RESET),
                 ("POST", "/step_visual"): ("unsupported", STEP), ("GET", "/action_hint"): ("action_hint", ID),
                 ("GET", "/goals"): ("goals", ID), ("GET", "/detail"): ("detail", ID),
                 ("GET", "/task_description"): ("unsupported", ID), ("GET", "/object_tree"): ("unsupported", ID),
                 ("GET", "/state"): ("unsupported", ID)},
}
