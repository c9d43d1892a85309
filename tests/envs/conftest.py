"""Shared environments (one per session: SciWorld starts a JVM) and the replay check."""
import json
import os

import pytest

from atlas_jax.envs import make_env, parse_action

SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "data", "sample")


def load_sample(stem):
    with open(os.path.join(SAMPLE_DIR, f"{stem}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def replay(env, record, exact_observations=True):
    """Play a record's actions in ``env`` afresh; every observation must match the record's
    human turns, and the episode must end in success exactly at the last action.
    (SciWorld lists a room's objects in an order that depends on the JVM's history, so there
    only success by the last action is required.)"""
    env_name, task_index = record["item_id"].rsplit("_", 1)
    assert env_name == env.name
    conversations = record["conversations"]
    assert conversations[0]["value"] == env.instruction
    first = env.reset(int(task_index))
    if exact_observations:
        assert conversations[2]["value"] == first, "first observation differs"
    responses = [t["value"] for t in conversations if t["from"] == "gpt"][1:]  # skip the acknowledgement
    observations = [t["value"] for t in conversations[3:] if t["from"] == "human"]
    assert len(observations) == len(responses) - 1
    for i, response in enumerate(responses):
        assert parse_action(response), f"{record['item_id']}: turn {i} has no action"
        result = env.step(response)
        if not exact_observations and result.done:
            break  # another object order can let a later gold step land early
        if i < len(responses) - 1:
            assert not result.done, f"{record['item_id']}: ended early at turn {i}"
            if exact_observations:
                assert result.observation == observations[i], f"{record['item_id']}: observation {i} differs"
    assert result.done and result.success, f"{record['item_id']}: replay did not succeed"


@pytest.fixture(scope="session")
def babyai_env():
    return make_env("babyai")


@pytest.fixture(scope="session")
def textcraft_env():
    return make_env("textcraft")


@pytest.fixture(scope="session")
def sciworld_env():
    env = make_env("sciworld")
    yield env
    env.close()


@pytest.fixture()
def serve():
    """``serve(env_name, **EnvServer options) -> url``: `atlas-jax serve-env` in a thread on a free
    port, shut down after the test."""
    import threading

    from atlas_jax.envs.serve_env import EnvServer

    servers = []

    def start(env_name, **options):
        server = EnvServer(env_name, "127.0.0.1", 0, quiet=True, **options)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
