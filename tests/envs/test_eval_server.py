"""`eval --server` end to end against `atlas-jax serve-env`: a policy replaying the recorded expert
trajectories of data/sample (each a success) gets, through the AgentGym protocol, the same
conversations, successes and AgentGym score as in process; a server that fails mid-episode
ends that episode as ``env_error`` and the run goes on."""
from __future__ import annotations

import json

import pytest

from atlas_jax.envs.agent_loop import Reply
from atlas_jax.envs.agentgym_client import RemoteEnv
from atlas_jax.envs.evaluate import evaluate
from atlas_jax.envs.registry import env_class

from .conftest import load_sample

SAMPLES = {"babyai": "babyai_train", "textcraft": "textcraft_train", "sciworld": "sciworld_heldout"}


class ReplayPolicy:
    """The recorded responses of each task's expert trajectory, turn by turn."""

    def __init__(self, records):
        self.scripts = {int(r["item_id"].rsplit("_", 1)[1]): [t["value"] for t in r["conversations"][3:]
                                                               if t["from"] == "gpt"] for r in records}

    def respond(self, episodes):
        replies = []
        for ep in episodes:
            turn = sum(m["role"] == "assistant" for m in ep.messages) - 1
            script = self.scripts[ep.task_index]
            replies.append(Reply(script[turn] if turn < len(script) else "Thought:\nwait\n\nAction:\nwait",
                                 num_tokens=1))
        return replies


class Shared:
    """One env instance for both sides (SciWorld starts a JVM per instance); close() is a no-op."""

    def __init__(self, env):
        self._env = env

    def __getattr__(self, name):
        return getattr(self._env, name)

    def close(self):
        pass



@pytest.mark.parametrize("env_name,episodes", [("babyai", 3), ("textcraft", 3), ("sciworld", 1)])
def test_remote_episodes_equal_in_process(env_name, episodes, serve, request, tmp_path):
    local = request.getfixturevalue(f"{env_name}_env")
    records = sorted(load_sample(SAMPLES[env_name]), key=lambda r: len(r["conversations"]))[:episodes]  # short ones
    ids = [int(r["item_id"].rsplit("_", 1)[1]) for r in records]
    policy = ReplayPolicy(records)
    scale = float(getattr(env_class(env_name), "score_scale", 100.0))
    url = serve(env_name, make_env=lambda: Shared(local))
    runs = {}
    for side, make in (("local", lambda: Shared(local)), ("remote", lambda: RemoteEnv(env_name, url))):
        out = tmp_path / f"{side}.jsonl"
        summary = evaluate(env_name, make, policy, episodes=episodes, batch_size=1, task_indices=ids,
                           on_unparsable="continue", out_path=str(out), score_scale=None if side == "remote" else scale)
        runs[side] = (summary, {r["task_index"]: r for r in map(json.loads, out.read_text().splitlines())})
    (local_sum, local_eps), (remote_sum, remote_eps) = runs["local"], runs["remote"]
    assert remote_sum.successes == local_sum.successes == episodes  # every recorded expert succeeds
    assert remote_sum.score == pytest.approx(local_sum.score) and remote_sum.score > 0
    assert "AgentGym" not in local_sum.protocol and remote_sum.success_rule == local_sum.success_rule
    for task in ids:
        assert remote_eps[task]["turns"] == local_eps[task]["turns"]
        if env_name != "sciworld":  # SciWorld's object order depends on the JVM's history
            assert remote_eps[task]["conversations"] == local_eps[task]["conversations"]


def test_server_failing_mid_episode_is_recorded_and_the_run_goes_on(serve, textcraft_env, tmp_path):
    records = load_sample("textcraft_train")[:2]
    ids = [int(r["item_id"].rsplit("_", 1)[1]) for r in records]
    broken = ids[0]

    class Failing(Shared):
        def step_action(self, action):
            if self._env.task_index == broken:
                raise RuntimeError("simulator crashed")
            return self._env.step_action(action)

    url = serve("textcraft", make_env=lambda: Failing(textcraft_env))
    out = tmp_path / "eps.jsonl"
    summary = evaluate("textcraft", lambda: RemoteEnv("textcraft", url, retries=0), ReplayPolicy(records),
                       episodes=2, batch_size=1, task_indices=ids, out_path=str(out))
    episodes = {r["task_index"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert episodes[broken]["end_reason"] == "env_error" and "simulator crashed" in episodes[broken]["error"]
    assert episodes[ids[1]]["end_reason"] == "success"
    assert summary.episodes == 2 and summary.successes == 1
