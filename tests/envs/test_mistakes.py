"""Recoverable expert mistakes (ATLaS's self-correction criterion), checked by replaying the
bundled sample in a fresh env: exactly the episodes ``plans_mistake`` picks contain one action
the env rejects without changing its state, and the next Thought names the failure."""
import json
import os
import re

import pytest

from atlas_jax.envs import make_env
from atlas_jax.envs.babyai import state_key
from atlas_jax.envs.experts import MISTAKE_PERIOD, plans_mistake, run_expert_episode

from tests.envs.conftest import SAMPLE_DIR, load_sample


def _state(env):
    return state_key(env.uenv) if env.name == "babyai" else dict(env.game.inventory)


def _rejected(env, result) -> bool:
    if env.name == "babyai":
        return bool(result.info.get("invalid"))
    return result.observation.startswith("Could not")


def failed_turns(env, record) -> list[int]:
    """Turns whose action the env rejected; each must leave the env's state as it was."""
    env.reset(int(record["item_id"].rsplit("_", 1)[1]))
    responses = [t["value"] for t in record["conversations"] if t["from"] == "gpt"][1:]
    failed = []
    for i, response in enumerate(responses):
        before = _state(env)
        result = env.step(response)
        if _rejected(env, result):
            assert _state(env) == before, f"{record['item_id']}: rejected turn {i} changed the state"
            failed.append(i)
    assert env.success, record["item_id"]
    return failed


@pytest.mark.parametrize("stem, env_name", [("babyai_train", "babyai"), ("textcraft_train", "textcraft")])
def test_sample_mistakes_are_recovered_at_the_designed_rate(stem, env_name):
    env = make_env(env_name)
    records = load_sample(stem)
    with_mistake = []
    for record in records:
        failed = failed_turns(env, record)
        thoughts = [t["value"] for t in record["conversations"] if t["from"] == "gpt"][1:]
        task_index = int(record["item_id"].rsplit("_", 1)[1])
        assert len(failed) == (1 if plans_mistake(task_index) else 0), record["item_id"]
        for i in failed:
            assert "failed" in thoughts[i + 1].split("\n\nAction:")[0], record["item_id"]  # the recovery Thought
            with_mistake.append(record["item_id"])
    with open(os.path.join(SAMPLE_DIR, "manifest.json"), encoding="utf-8") as f:
        assert json.load(f)["files"][stem]["recovered"] == len(with_mistake) > 0
    assert abs(len(with_mistake) / len(records) - 1 / MISTAKE_PERIOD) < 0.05


def test_babyai_mistakes_get_agentgyms_rejections():
    """Each planned BabyAI mistake is one AgentGym's server rejects with one of its own messages
    (the whole exchange is also replayed against a recorded AgentGym transcript in test_babyai)."""
    env = make_env("babyai")
    messages = set()
    for record in load_sample("babyai_train"):
        env.reset(int(record["item_id"].rsplit("_", 1)[1]))
        for response in [t["value"] for t in record["conversations"] if t["from"] == "gpt"][1:]:
            result = env.step(response)
            if result.info.get("invalid"):
                messages.add(result.observation.split("\n")[0])
    agentgyms = re.compile(r"The action is not recognized\. Please check valid actions\.|"
                           r"There is a barrier in front of you, you can't move forward\.|"
                           r"You cannot go through \w+ closed door \d+, as it is closed\. You should toggle it first\.")
    assert messages and all(agentgyms.fullmatch(m) for m in messages), messages


def test_mistake_is_skipped_when_it_would_pass_the_step_limit():
    task = 3  # TextCraft train task with a planned mistake (3 % MISTAKE_PERIOD == 0)
    assert plans_mistake(task)
    plain = run_expert_episode(make_env("textcraft"), task, mistakes=False)
    steps = sum(t["from"] == "gpt" for t in plain["conversations"]) - 1
    assert len(failed_turns(make_env("textcraft"), run_expert_episode(make_env("textcraft"), task))) == 1
    tight = make_env("textcraft", max_steps=steps)  # no room for the extra turn
    assert run_expert_episode(tight, task) == plain
