"""TextWorldExpress (held-out): gold-path experts replay in a fresh env; invalid actions."""
from atlas_jax.envs import make_env
from atlas_jax.envs.experts import ExpertReport, generate

from tests.envs.conftest import replay


def test_generated_trajectories_replay_and_invalid_action():
    generator, fresh = make_env("textworldexpress"), make_env("textworldexpress")
    try:
        report = ExpertReport("textworldexpress")
        records = list(generate(generator, generator.task_indices("eval", 16), report))
        assert report.kept == len(records) >= 12
        assert {generator.game_fold_seed(int(r["item_id"].rsplit("_", 1)[1]))[0] for r in records} >= {"coin", "sorting"}
        for record in records:
            replay(fresh, record)
        observation = fresh.reset(0)
        assert observation.startswith("Your task is to search the environment and find the coin.")
        result = fresh.step("Thought:\nHmm.\n\nAction:\nfly away")
        assert result.observation == "Unknown action: I'm not sure what you mean." and not result.done
    finally:
        generator.close()
        fresh.close()
