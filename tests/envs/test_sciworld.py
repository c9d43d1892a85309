"""SciWorld (one JVM for the module): the bundled held-out sample replays; protocol checks."""
from atlas_jax.envs.sample import SAMPLE

from tests.envs.conftest import load_sample, replay


def test_heldout_sample_replays(sciworld_env):
    records = load_sample("sciworld_heldout")
    assert len(records) >= 10 and len({r["item_id"] for r in records}) == len(records)
    tasks = set()
    for record in records:
        index = int(record["item_id"].rsplit("_", 1)[1])
        assert sciworld_env.split_of(index) == "eval"  # held out: never a training variation
        tasks.add(sciworld_env.task_and_variation(index)[0])
        replay(sciworld_env, record, exact_observations=False)
        assert record["conversations"][2]["value"].startswith("Task Description:\nYour task is to")
    assert len(tasks) >= 8 and SAMPLE["sciworld_heldout"][1] == "eval"


def test_first_observation_invalid_action_and_focus(sciworld_env):
    env = sciworld_env
    index = env.task_indices("eval", 1)[0]
    task, variation = env.task_and_variation(index)
    assert task == "boil" and variation in env._fold("boil")[2]
    observation = env.reset(index)
    assert observation.startswith("Task Description:\nYour task is to boil")
    assert "This room is called the" in observation  # the 'look around' that AgentGym appends
    result = env.step("Thought:\nLet me fly.\n\nAction:\nfly to the moon")
    assert result.observation.startswith("No known action matches that input.")
    assert not result.done and result.reward == 0
    result = env.step("Action: focus on the agent")  # focusing on a wrong object fails the task
    assert result.done and not result.success and result.info["score"] < 0


def test_train_and_eval_variations_are_disjoint(sciworld_env):
    train = sciworld_env.task_indices("train", 200)
    evaluation = sciworld_env.task_indices("eval", 200)
    assert len(train) == len(evaluation) == 200 and not set(train) & set(evaluation)
    assert len({sciworld_env.task_and_variation(i)[0] for i in evaluation}) == len(sciworld_env.tasks) == 23
