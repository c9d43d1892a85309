"""TextCraft against AgentGym's recorded server, on hand-checked situations and across processes.

fixtures/textcraft_agentgym.json was recorded from AgentGym's own TextCraft server and client
(WooooDyy/AgentGym @ 3ef9235, recipe folder read sorted, PYTHONHASHSEED=0): per episode the
first observation, the goal's own recipes (from AgentGym's crafting tree) and every step's
response, observation, reward and done, invalid responses included.
"""
import json
import os
import subprocess
import sys

import pytest

from atlas_jax.envs.textcraft import TextCraftEnv

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "textcraft_agentgym.json")


@pytest.fixture(scope="module")
def agentgym_episodes():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)["episodes"]


@pytest.fixture(scope="module")
def long_env():
    return TextCraftEnv(max_steps=100)  # AgentGym's server has no step limit of its own


def test_replays_agentgym_transcripts_exactly(long_env, agentgym_episodes):
    assert len(agentgym_episodes) == 5
    for episode in agentgym_episodes:
        first = long_env.reset(episode["data_idx"]).split("\n")
        theirs = episode["first_observation"].split("\n")
        # the goal and its recipes are AgentGym's; only the distractors and the order follow
        # Python's string hashing there (sorted here)
        assert first[-1] == theirs[-1] and len(first) == len(theirs), episode["data_idx"]
        assert set(episode["goal_recipes"]) <= set(first)
        for i, step in enumerate(episode["steps"]):
            result = long_env.step(step["response"])
            got = (result.observation, result.reward, result.done)
            assert got == (step["observation"], step["reward"], step["done"]), (episode["data_idx"], i)
        assert result.success


def test_client_parsing_as_agentgym():
    env = TextCraftEnv()
    assert env.parse_response("Thought:\nx\n\nAction:\nget 1 oak  logs!</s>") == ("get 1 oak logss", None)
    assert env.parse_response("Thought:\nno action") == ("", None)
    assert env.parse_response("Action:\n\nCraft 4 Stick using 2 planks") == ("Craft 4 Stick using 2 planks", None)
    action, refused = env.parse_response("Action: inventory\nAction: get 1 stick")
    assert action is None and refused.observation == "Error: Only one 'Action' is allowed per response. Please adjust your response."
    assert env.parse_response("action: inventory") == ("", None)  # AgentGym's client is case-sensitive


def test_index_map(textcraft_env):
    env = textcraft_env
    assert env.num_tasks() == 544
    assert env.reset(0).endswith("\n\nGoal: craft acacia planks.")
    depths = [env.tree.get_min_depth(goal) for goal in env.goals]
    assert depths == sorted(depths) and depths[0] == 1 and depths[-1] == 4
    evaluation, train = env.task_indices("eval", 1000), env.task_indices("train", 1000)
    assert len(evaluation) == 136 and len(train) == 408 and not set(evaluation) & set(train)


def test_crafting_by_hand(textcraft_env):
    env = textcraft_env
    observation = env.reset(534)
    assert observation.startswith("Crafting commands:\n") and observation.endswith("Goal: craft gray banner.")
    for command in ("craft 4 oak planks using 1 oak logs", "craft 4 stick using 2 planks",
                    "craft 1 gray banner using 6 gray wool, 1 stick"):
        assert command in observation.splitlines()
    steps = [
        ("get 1 oak logs", "Got 1 oak logs"),
        ("craft 4 oak planks using 1 oak logs", "Crafted 4 minecraft:oak_planks"),
        ("craft 4 stick using 2 oak planks", "Crafted 4 minecraft:stick"),  # a concrete type for generic planks
        ("inventory", "Inventory: [oak planks] (2) [stick] (4) "),
        ("get 2 stick", "Could not find stick"),  # craftable items cannot be fetched
        ("craft 1 gray banner using 6 gray wool, 1 stick", "Could not find enough items to craft minecraft:gray_banner"),
        ("Inventory", "Could not execute Inventory"),  # the server is case-sensitive
    ]
    for action, expected in steps:
        result = env.step(f"Thought:\nnext.\n\nAction:\n{action}")
        assert result.observation == expected, action
        assert not result.done and result.reward == 0


def test_crafting_the_goal_succeeds(textcraft_env):
    env = textcraft_env
    env.reset(132)
    assert env.first_observation.endswith("Goal: craft acacia slab.")
    assert "craft 6 acacia slab using 3 acacia planks" in env.first_observation.splitlines()
    env.step("Action: get 1 acacia logs")
    result = env.step("Action: craft 4 acacia planks using 1 acacia logs")
    assert not result.done
    result = env.step("Thought:\nI have the planks.\n\nAction:\ncraft 6 acacia slab using 3 acacia planks")
    assert result.observation == "Crafted 6 minecraft:acacia_slab"
    assert result.done and result.success and result.reward == 1 and result.info["steps"] == 3
    assert TextCraftEnv.score_scale == 100


def test_task_is_identical_under_another_hash_seed(textcraft_env):
    code = "from atlas_jax.envs import make_env; print(make_env('textcraft').reset(300), end='')"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert other == textcraft_env.reset(300)
