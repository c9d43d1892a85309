"""The eval loop with scripted policies: a policy that solves a known subset of TextCraft
tasks (by replaying the expert) gets exactly that success rate; overflow, unparsable
responses and env errors end their episodes, are counted, and never stop the run."""
from __future__ import annotations

import json

import pytest

from atlas_jax.envs import make_env
from atlas_jax.envs.agent_loop import Reply, run_episodes
from atlas_jax.envs.base import ACKNOWLEDGEMENT, StepResult, TextEnv, format_response
from atlas_jax.envs.evaluate import evaluate, summary_table
from atlas_jax.envs.experts import run_expert_episode
from atlas_jax.envs.textcraft import INSTRUCTION

# TextCraft eval tasks 36, 456, 168, 40 (positions 31..34 of the eval split); the expert solves 36
# and 40 in 3 steps each; 456 and 168 get a useless action until the 3-step limit.
SOLVED, UNSOLVED, SKIP = (36, 40), (456, 168), 31
WASTE = format_response("I will look at my inventory again.", "inventory")


class ReplayPolicy:
    """Answers with the expert's responses on SOLVED tasks, ``WASTE`` elsewhere."""

    def __init__(self, scripts: dict[int, list[str]]):
        self.scripts = scripts
        self.batch_sizes: list[int] = []

    def respond(self, episodes):
        self.batch_sizes.append(len(episodes))
        replies = []
        for ep in episodes:
            turn = sum(m["role"] == "assistant" for m in ep.messages) - 1  # minus the acknowledgement
            script = self.scripts.get(ep.task_index)
            replies.append(Reply(script[turn] if script else WASTE, num_tokens=7))
        return replies


@pytest.fixture(scope="module")
def expert_scripts():
    env = make_env("textcraft")
    scripts = {}
    for task in SOLVED:
        record = run_expert_episode(env, task, mistakes=False)  # the plain 3-step solutions
        scripts[task] = [t["value"] for t in record["conversations"][3:] if t["from"] == "gpt"]
    return scripts


def test_scripted_policy_gives_expected_success_rate(expert_scripts, tmp_path):
    assert all(len(s) == 3 for s in expert_scripts.values())
    policy = ReplayPolicy(expert_scripts)
    out = tmp_path / "textcraft.jsonl"
    summary = evaluate("textcraft", lambda: make_env("textcraft", max_steps=3), policy, episodes=4, split="eval",
                       skip=SKIP, batch_size=3, out_path=str(out))
    assert policy.batch_sizes[0] == 3 and max(policy.batch_sizes) == 3  # 3 slots, refilled as episodes end
    assert summary.episodes == 4 and summary.successes == 2 and summary.success_rate == 0.5
    assert summary.mean_turns == 3.0 and summary.mean_reward == 0.5
    assert dict(summary.end_reasons) == {"success": 2, "step_limit": 2}
    assert summary.generated_tokens == 4 * 3 * 7
    records = {r["task_index"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == sorted(SOLVED + UNSOLVED)
    for task, record in records.items():
        assert record["item_id"] == f"textcraft_{task}" and record["split"] == "eval"
        assert record["success"] == (task in SOLVED) and record["turns"] == 3
        convo = record["conversations"]
        # instruction, ack, first observation, then 3 x (response, observation): the final one included
        assert [t["from"] for t in convo] == ["human", "gpt"] * 4 + ["human"]
        assert convo[0]["value"] == INSTRUCTION and convo[1]["value"] == ACKNOWLEDGEMENT
    assert "| textcraft | eval | 4 | 0.500 | 50.00 | 0.500 | 3.00 | 2 / 0 / 2 / 0 / 0 / 0 |" in summary_table([summary])


class ToyEnv(TextEnv):
    """Task i is solved by 'answer i'; 'explode' raises; resetting task 3 raises."""

    name = "toy"
    instruction = "Say the answer."
    default_max_steps = 4

    def num_tasks(self):
        return 10

    def split_of(self, task_index):
        return "eval"

    def _reset(self, task_index):
        if task_index == 3:
            raise OSError("backend unavailable")
        return f"Task {task_index}."

    def _act(self, action):
        if action == "explode":
            raise RuntimeError("simulator crashed")
        ok = action == f"answer {self.task_index}"
        return StepResult("Correct." if ok else "Wrong.", float(ok), ok, ok)


class ToyPolicy:
    """Per task: 0 solves at the 2nd turn, 1 overflows, 2 is unparsable, 4 explodes, 5 keeps failing."""

    def respond(self, episodes):
        out = []
        for ep in episodes:
            turn = sum(m["role"] == "assistant" for m in ep.messages) - 1
            if ep.task_index == 1:
                out.append(Reply("", overflow=True, stopped=False))
            elif ep.task_index == 2:
                out.append(Reply("I am not sure what to do", stopped=False, num_tokens=5))
            elif ep.task_index == 4:
                out.append(Reply(format_response("boom", "explode")))
            elif ep.task_index == 0 and turn == 1:
                out.append(Reply(format_response("now I know", "answer 0")))
            else:
                out.append(Reply(format_response("guess", "answer 99")))
        return out


def test_failures_end_episodes_cleanly_and_are_counted():
    episodes = {e.task_index: e for e in run_episodes(ToyEnv, range(6), ToyPolicy(), batch_size=4, split="eval")}
    assert sorted(episodes) == list(range(6))
    reasons = {i: e.end_reason for i, e in episodes.items()}
    assert reasons == {0: "success", 1: "context_overflow", 2: "unparsable", 3: "env_error", 4: "env_error",
                       5: "step_limit"}
    assert episodes[0].turns == 2 and episodes[0].reward == 1.0
    assert episodes[2].unparsable == 1 and episodes[2].truncated_responses == 1 and episodes[2].turns == 0
    assert "OSError: backend unavailable" in episodes[3].error and "simulator crashed" in episodes[4].error
    assert episodes[5].turns == 4
    # with on_unparsable="continue" the env answers the bad response and the episode goes on
    cont = next(run_episodes(ToyEnv, [2], ToyPolicy(), batch_size=1, on_unparsable="continue"))
    assert cont.end_reason == "step_limit" and cont.unparsable == 4 and cont.invalid_actions == 4
