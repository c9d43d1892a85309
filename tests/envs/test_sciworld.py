"""SciWorld (one env for the module; each reset starts a fresh simulator JVM) against AgentGym.

fixtures/sciworld_agentgym.json was recorded from AgentGym's own SciWorld server and client
(WooooDyy/AgentGym @ 3ef9235, scienceworld 1.2.3), each episode on a fresh env (``/create``
then ``/reset``): the first observation and every step's response, observation, reward (the
client's, i.e. the score) and done, invalid responses included.
"""
import json
import os

from atlas_jax.envs.sample import SAMPLE
from atlas_jax.envs.sciworld import SciWorldEnv, parse_react

from tests.envs.conftest import load_sample, replay

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "sciworld_agentgym.json")


def test_replays_agentgym_transcripts_exactly(sciworld_env):
    with open(FIXTURE, encoding="utf-8") as f:
        episodes = json.load(f)["episodes"]
    assert len(episodes) >= 2
    for episode in episodes:
        assert sciworld_env.reset(episode["data_idx"]) == episode["first_observation"]
        for i, step in enumerate(episode["steps"]):
            result = sciworld_env.step(step["response"])
            got = (result.observation, result.reward, result.done)
            assert got == (step["observation"], step["reward"], step["done"]), (episode["data_idx"], i)
        assert result.success and result.reward == 100


def test_heldout_sample_replays(sciworld_env):
    records = load_sample("sciworld_heldout")
    assert len(records) >= 10 and len({r["item_id"] for r in records}) == len(records)
    tasks = set()
    for record in records:
        index = int(record["item_id"].rsplit("_", 1)[1])
        assert sciworld_env.split_of(index) == "eval"  # held out: never a training variation
        tasks.add(sciworld_env.task_and_variation(index)[0])
        assert record["conversations"][2]["value"].startswith("Your task is to")
    for record in records[::8]:  # a fresh JVM per episode: a few suffice
        replay(sciworld_env, record, exact_observations=True)
    assert len(tasks) >= 8 and SAMPLE["sciworld_heldout"][1] == "eval"


def test_first_observation_invalid_action_and_focus(sciworld_env):
    env = sciworld_env
    index = env.task_indices("eval", 1)[0]
    task, variation = env.task_and_variation(index)
    assert task == "boil" and variation in env._fold("boil")[1] and index == variation
    observation = env.reset(index)
    assert observation.startswith("Your task is to boil")
    assert "\nThis room is called the" in observation  # the 'look around' that AgentGym appends
    result = env.step("Thought:\nLet me fly.\n\nAction:\nfly to the moon")
    assert result.observation.startswith("No known action matches that input.")
    assert not result.done and result.reward == 0
    result = env.step("Action: focus on the agent")  # focusing on a wrong object fails the task
    assert result.done and not result.success and result.reward < 0 and result.info["score"] < 0


def test_index_map_and_splits(sciworld_env):
    env = sciworld_env
    assert env.num_tasks() == 4639 and len(env.tasks) == 23 and SciWorldEnv.score_scale == 1
    assert env.task_and_variation(0) == ("boil", 0) and env.task_and_variation(4638)[0] == "identify-life-stages-2"
    train = env.task_indices("train", 200)
    evaluation = env.task_indices("eval", 200)
    assert len(train) == len(evaluation) == 200 and not set(train) & set(evaluation)
    assert len({env.task_and_variation(i)[0] for i in evaluation}) == 23


def test_client_parsing_as_agentgym():
    assert parse_react("Thought:\nx\n\nAction:\nlook around</s>") == "look aroun"  # the client cuts 5 characters
    assert parse_react("Thought: a\nAction: go to kitchen\nAction:  wait1 ") == "wait1"
    assert parse_react("Thought:\nno action") == ""
    assert parse_react("I will search[kettle]") == "I will search[kettle]"

