"""TextWorldExpress (held-out environment) behind the text protocol, with its gold paths.

Task index ``i`` is game ``GAMES[i % 8]`` with seed ``k = i // 8``: ``k < 100`` is the
game's test fold, seed ``k`` (eval); ``k >= 100`` is its train fold, seed ``k - 100`` (train).
"""
from __future__ import annotations

from atlas_jax.envs.base import StepResult, TextEnv
from atlas_jax.envs.gold_path import GoldPathExpert

GAMES = ("coin", "mapreader", "sorting", "simonsays", "peckingorder", "arithmetic", "cookingworld", "twc")
EVAL_SEEDS = 100
TRAIN_SEEDS = 1000

INSTRUCTION = (
    "You are playing a text adventure game. Every round I will give you an observation, and you have to respond "
    "with an action based on it to finish the given task. Typical actions are: look around, inventory, move "
    "<direction>, open/close door to <direction>, take <object>, put <object> in/on <container>, read <object>, "
    "eat <object>, cook <object> in <appliance>, slice/dice/chop <object> (holding a knife), and game-specific "
    "answers that the task names.\nYour response should use the following format:\nThought:\nyour thoughts.\n\n"
    "Action:\nyour next action"
)


class TextWorldExpressEnv(TextEnv):
    name = "textworldexpress"
    instruction = INSTRUCTION
    default_max_steps = 30

    def __init__(self, max_steps: int | None = None):
        super().__init__(max_steps)
        from textworld_express import TextWorldExpressEnv as _Game

        self.game = _Game(envStepLimit=10**6)  # our step limit governs
        self.gold: list[str] = []

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None

    def num_tasks(self) -> int:
        return len(GAMES) * (EVAL_SEEDS + TRAIN_SEEDS)

    def split_of(self, task_index: int) -> str:
        self.check_index(task_index)
        return "eval" if task_index // len(GAMES) < EVAL_SEEDS else "train"

    @staticmethod
    def game_fold_seed(task_index: int) -> tuple[str, str, int]:
        k = task_index // len(GAMES)
        game = GAMES[task_index % len(GAMES)]
        return (game, "test", k) if k < EVAL_SEEDS else (game, "train", k - EVAL_SEEDS)

    def _reset(self, task_index: int) -> str:
        game, fold, seed = self.game_fold_seed(task_index)
        observation, infos = self.game.reset(seed=seed, gameFold=fold, gameName=game, gameParams="",
                                             generateGoldPath=True)
        self.gold = list(self.game.getGoldActionSequence())
        return infos["taskDescription"].strip() + "\n" + observation.strip()

    def _act(self, action: str) -> StepResult:
        observation, _, _, infos = self.game.step(action)
        success = bool(infos["tasksuccess"])
        done = success or bool(infos["taskfailure"])
        return StepResult(observation.strip(), float(infos["score"]), done, success, {"score": infos["score"]})


class TextWorldExpressExpert(GoldPathExpert):
    """Plays the game's gold path (skipping its opening 'look around', which reset already shows)."""

    def __init__(self, env: TextWorldExpressEnv):
        super().__init__(env, env.gold[1:] if env.gold[:1] == ["look around"] else env.gold)

    def thought(self, action: str, observation: str) -> str:
        if self.position == 0:
            task = self.env.first_observation.splitlines()[0]
            return f"The task: {task} I start exploring towards what it needs, so I {action}."
        if action.startswith(("move ", "open door")):
            return f"What I need is not here yet, so I {action} to keep searching."
        if action.startswith("take "):
            return f"Here is something the task needs, so I {action}."
        return f"Given what I just observed, the next step towards the task is to {action}."
