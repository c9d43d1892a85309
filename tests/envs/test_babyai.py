"""BabyAI text rendering checked by hand against minigrid's own grid.

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
import numpy as np


def test_description_matches_the_grid(babyai_env):
    observation = babyai_env.reset(1)
    uenv = babyai_env.uenv
    assert (tuple(uenv.agent_pos), uenv.agent_dir) == ((6, 5), 2)
    lines = observation.split("\n")
    assert lines[0] == "Your goal: go to the red ball"
    assert lines[1].startswith("In front of you in this room, you can see several objects: "
                               "There is a yellow key 1 1 steps in front of you and 1 steps to your left. "
                               "There is a grey ball 1 1 steps in front of you and 1 steps to your right. ")
    assert "There is a red ball 1 4 steps in front of you and 3 steps to your right." in lines[1]
    assert lines[1].endswith("You are facing a wall 6 steps away. You are not carrying anything.")
    assert lines[2].startswith('Available actions: ["turn left", "turn right", "move forward", "go to yellow key 1"')
    assert '"go to red ball 1"' in lines[2] and '"drop"' not in lines[2]


def test_go_to_and_pick_up_expand_into_moves(babyai_env):
    env = babyai_env
    env.reset(1)
    result = env.step("Thought:\nThe red ball is 4 ahead, 3 right.\n\nAction:\ngo to red ball 1")
    front = env.uenv.grid.get(*(np.array(env.uenv.agent_pos) + env.uenv.dir_vec))
    assert (front.type, front.color) == ("ball", "red")  # facing it, next to it: the level is solved
    assert result.done and result.success and result.reward > 0
    assert result.observation.endswith("The task is completed.")

    env.reset(1)
    env.step("Action: pick up grey ball 1")
    assert (env.uenv.carrying.type, env.uenv.carrying.color) == ("ball", "grey")
    observation = env.step("Action: turn left").observation
    assert "You are carrying a grey ball." in observation and '"drop"' in observation


def test_invalid_actions_answer_with_errors(babyai_env):
    env = babyai_env
    env.reset(1)
    pose = (tuple(env.uenv.agent_pos), env.uenv.agent_dir)
    result = env.step("Action: fly to the moon")
    assert result.observation.startswith("The action is not recognized. Please check valid actions.\nAvailable actions: [")
    assert env.step("Action: drop").observation.startswith(
        "You cannot drop the object, as you are not carrying anything.")
    assert env.step("Action: go to purple ball 3").observation.startswith("You cannot go to purple ball 3")
    checked = env.step("Action: check available actions")
    assert checked.observation.startswith("You can take the following actions: turn left, turn right, move forward")
    assert not checked.done and checked.info["steps"] == 4
    assert (tuple(env.uenv.agent_pos), env.uenv.agent_dir) == pose  # none of them moved the agent


def test_task_index_maps_to_level_and_seed(babyai_env):
    assert babyai_env.level_and_seed(0) == ("GoToRedBallGrey-v0", 0)
    assert babyai_env.level_and_seed(83) == ("GoToObjS6-v1", 2)
    assert babyai_env.split_of(399) == "eval" and babyai_env.split_of(400) == "train"
