"""The text protocol shared by all environments: action parsing, step limits, records."""
import pytest

from atlas_jax.envs import make_env, make_record, parse_action
from atlas_jax.envs.base import ACKNOWLEDGEMENT


@pytest.mark.parametrize("response, action", [
    ("Thought:\nI see a key.\n\nAction:\npick up yellow key 1", "pick up yellow key 1"),
    ("Thought: x\nAction: turn left", "turn left"),
    ("Action: go to red ball 1\nThought: no, wait\nAction: turn right</s>", "turn right"),  # last Action wins
    ("action:   move forward  ", "move forward"),
    ("Thought: I will just think.", None),
    ("Action:\n\n", None),
])
def test_parse_action(response, action):
    assert parse_action(response) == action


def test_unparsable_response_uses_a_step_and_step_limit_ends_the_episode(textcraft_env):
    env = make_env("textcraft", max_steps=3)
    env.reset(1)
    first = env.step("I am not following the format")  # AgentGym's TextCraft client sends an empty action
    assert first.observation == "Could not execute " and not first.done and first.info["action"] == ""
    assert not env.step("Action: dance").done
    last = env.step("Action: inventory")
    assert last.done and not last.success and last.info["truncated"] and last.info["steps"] == 3
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("Action: inventory")


def test_record_layout():
    record = make_record("babyai", 7, "INSTR", "OBS0", [("R1", "OBS1"), ("R2", "OBS2")])
    assert record["item_id"] == "babyai_7"
    assert [(t["from"], t["value"], t["loss"]) for t in record["conversations"]] == [
        ("human", "INSTR", None), ("gpt", ACKNOWLEDGEMENT, False), ("human", "OBS0", None),
        ("gpt", "R1", True), ("human", "OBS1", None), ("gpt", "R2", True)]


@pytest.mark.parametrize("name", ["babyai", "textcraft"])
def test_splits_are_disjoint_and_stable(name, babyai_env, textcraft_env):
    env = {"babyai": babyai_env, "textcraft": textcraft_env}[name]
    train, evaluation = env.task_indices("train", 10**6), env.task_indices("eval", 10**6)
    assert not set(train) & set(evaluation) and len(train) + len(evaluation) == env.num_tasks()
    assert len(evaluation) >= 100
    assert env.task_indices("train", 5, start=3) == train[3:8]
    with pytest.raises(ValueError, match="out of range"):
        env.reset(env.num_tasks())


def test_unknown_env_is_named():
    with pytest.raises(ValueError, match="unknown environment 'alfworld'"):
        make_env("alfworld")
