"""BabyAI must be AgentGym's BabyAI exactly.

The reference is tests/envs/fixtures/babyai_agentgym.json: transcripts recorded from AgentGym's
own BabyAI server (commit 3ef9235, its pinned minigrid 2.3.1) through AgentGym's own client
(see the file's "source"). Every observation, reward and done flag must come out identical.
The other tests check single rules by hand against minigrid's grid.

Task 1 is GoToRedBall-v0 with seed 0. Its grid (``pprint_grid``), agent at column 6,
row 5, facing left (so "right" is up):
    WG WG WG WG WG WG WG WG
    WG                   WG
    WG    AR             WG      red ball at (2, 2): 4 ahead, 3 right
    WG    KG    BR       WG
    WG AG       KB AG    WG      grey ball at (5, 4): 1 ahead, 1 right
    WG                << WG
    WG          KP KY    WG      yellow key at (5, 6): 1 ahead, 1 left
    WG WG WG WG WG WG WG WG      wall ahead at column 0: 6 steps
"""
import json
import os

import numpy as np
import pytest

from atlas_jax.envs import make_env
from atlas_jax.envs.babyai import INSTRUCTION, TWO_ACTIONS, client_action

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "babyai_agentgym.json")
with open(FIXTURE, encoding="utf-8") as _f:
    EPISODES = json.load(_f)["episodes"]


@pytest.fixture(scope="module")
def unlimited():
    return make_env("babyai", max_steps=10**6)  # the fixtures' episodes run past 20 turns


@pytest.mark.parametrize("episode", EPISODES, ids=[f"{e['data_idx']}:{e['name'][:40]}" for e in EPISODES])
def test_replays_agentgym_transcript_exactly(episode, unlimited):
    env = unlimited
    assert env.reset(episode["data_idx"]) == episode["first_observation"]
    for i, step in enumerate(episode["steps"]):
        result = env.step(step["response"])
        assert (result.observation, result.reward, result.done) == (step["observation"], step["reward"],
                                                                    step["done"]), f"step {i}: {step['response']!r}"
        assert result.success == result.done
        if "get_observation" in step:  # the server's GET /observation after the step
            assert env.observe() == step["get_observation"], f"step {i}: observation route"


def test_description_matches_the_grid(babyai_env):
    observation = babyai_env.reset(1)
    uenv = babyai_env.uenv
    assert (tuple(uenv.agent_pos), uenv.agent_dir) == ((6, 5), 2)
    lines = observation.split("\n")
    assert lines[0] == "Your goal: go to the red ball"
    assert lines[1].startswith("In front of you in this room, you can see several objects: "
                               "There is a yellow key 1 1 steps in front of you and 1 steps to your left.  "
                               "There is a grey ball 1 1 steps in front of you and 1 steps to your right.  ")
    assert "There is a red ball 1 4 steps in front of you and 3 steps to your right.  " in lines[1]
    assert lines[1].endswith("The room has walls around you. You are facing a wall 6 steps away. "
                             "You are not carrying anything.")
    assert lines[2].startswith('Available actions: ["turn left", "turn right", "move forward", "pickup yellow key 1"')
    assert lines[2].endswith('"go to red ball 1", "check available actions"]') and '"drop"' not in lines[2]


def test_reward_is_minigrids_and_done_needs_more_than_half(babyai_env):
    env = babyai_env
    env.reset(1)
    result = env.step("Thought:\nThe red ball is 4 ahead, 3 right.\n\nAction:\ngo to red ball 1")
    front = env.uenv.grid.get(*(np.array(env.uenv.agent_pos) + env.uenv.dir_vec))
    assert (front.type, front.color) == ("ball", "red")  # facing it, next to it: the level is solved
    steps, limit = env.uenv.step_count, env.uenv.max_steps
    # by hand on the grid: turn right, 3 moves up to (6, 2), turn left, 3 moves to (3, 2), facing the ball
    assert (steps, limit) == (8, 64)
    assert result.reward == 1 - 0.9 * steps / limit and result.done and result.success
    assert result.observation.split("\n")[1] == " The task is completed."


def test_pickup_is_the_vocabulary_and_pick_up_is_not(babyai_env):
    env = babyai_env
    env.reset(1)
    assert env.step("Action: pick up grey ball 1").observation.startswith(
        "The action is not recognized. Please check valid actions.\nAvailable actions: [")
    env.step("Action: pickup grey ball 1")
    assert (env.uenv.carrying.type, env.uenv.carrying.color) == ("ball", "grey")
    assert "You are carrying a grey ball." in env.step("Action: turn left").observation


def test_client_sanitises_and_refuses_like_agentgyms(babyai_env):
    assert client_action("Thought: x\nAction: Turn Left.") == "Turn Left"
    assert client_action("Action:\n\n go  to red-ball 1!\nmore") == "go to redball 1"
    assert client_action("no action here") == ""
    assert client_action("Action: turn left\nAction: turn right") is None
    env = babyai_env
    env.reset(1)
    refused = env.step("Action: turn left\nAction: turn right")
    assert (refused.observation, refused.reward, refused.done) == (TWO_ACTIONS, 0, False)
    assert env.step("").observation.startswith("No change in state.\n")


def test_task_index_maps_to_level_and_seed(babyai_env):
    assert babyai_env.level_and_seed(0) == ("GoToRedBallGrey-v0", 0)
    assert babyai_env.level_and_seed(83) == ("GoToObjS6-v0", 2)
    babyai_env.reset(83)
    assert babyai_env.uenv.room_size == 4  # what minigrid < 2.5 registered as GoToObjS6-v0
    assert babyai_env.split_of(399) == "eval" and babyai_env.split_of(400) == "train"
    assert babyai_env.instruction == INSTRUCTION and "- pick up <obj> <id>" in INSTRUCTION


def test_goal_rewrites_then_and_after_you_to_and(babyai_env):
    observation = babyai_env.reset(47)
    assert babyai_env.uenv.mission == "go to a key and go to the ball after you go to the red ball and go to a key"
    assert observation.split("\n")[0] == "Your goal: go to a key and go to the ball and go to the red ball and go to a key"
