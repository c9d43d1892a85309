"""`atlas-jax eval` over several processes: two local JAX processes (one CPU device each) write
byte-identical files to one process (per-episode JSONL in task order, summary.md, the summary's
environments): greedy decoding and row-independent decoding make each episode's text the same
whichever process and batch row plays it. A killed run's finished episodes are kept and not replayed."""
from __future__ import annotations

import json

import pytest

from atlas_jax.cli import main
from atlas_jax.envs import make_env
from atlas_jax.envs.evaluate import evaluate
from tests.envs.test_eval_cmd import tiny_agent_dir  # noqa: F401  (the fixture)
from tests.envs.test_eval_loop import SKIP, ReplayPolicy, expert_scripts  # noqa: F401  (a fixture too)
from tests.multiprocess_cli import run_cli_processes


def eval_argv(model_dir, out):
    return ["eval", "--model", str(model_dir), "--env", "textcraft", "--episodes", "4", "--out", str(out),
            "--max-new-tokens", "8", "--batch-size", "2", "--dtype", "float32", "--max-steps", "1",
            "--on-unparsable", "continue", "--no-progress"]


def test_two_processes_write_the_one_process_files(tiny_agent_dir, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(eval_argv(tiny_agent_dir, one)) == 0
    stdout = run_cli_processes(eval_argv(tiny_agent_dir, two), count=2)
    assert "wrote 4 episodes" in stdout[0] and "wrote" not in stdout[1]
    records = [json.loads(line) for line in (one / "textcraft.jsonl").read_text().splitlines()]
    assert [r["task_index"] for r in records] == [536, 416, 128, 0]  # the split's first four, in task order
    assert (two / "textcraft.jsonl").read_bytes() == (one / "textcraft.jsonl").read_bytes()
    assert (two / "summary.md").read_bytes() == (one / "summary.md").read_bytes()
    summaries = [json.loads((d / "summary.json").read_text()) for d in (one, two)]
    assert summaries[0]["environments"] == summaries[1]["environments"]
    generation = [s["generation"] for s in summaries]  # both processes' generation is counted
    assert generation[1]["processes"] == 2 and generation[0]["processes"] == 1
    assert generation[1]["generated_tokens"] == generation[0]["generated_tokens"] == sum(
        r["generated_tokens"] for r in records)
    assert sorted(p.name for p in two.iterdir()) == ["summary.json", "summary.md", "textcraft.jsonl"]


class DiesAfter(ReplayPolicy):
    """The replay policy, killed (KeyboardInterrupt) once ``episodes`` episodes have finished."""

    def __init__(self, scripts, episodes):
        super().__init__(scripts)
        self.episodes, self.tasks = episodes, []

    def respond(self, episodes):
        self.tasks += [ep.task_index for ep in episodes if ep.task_index not in self.tasks]
        if len(self.tasks) > self.episodes:
            raise KeyboardInterrupt
        return super().respond(episodes)


def test_a_killed_eval_keeps_its_episodes_and_the_rerun_plays_only_the_rest(expert_scripts, tmp_path):  # noqa: F811
    def run(policy, out):
        return evaluate("textcraft", lambda: make_env("textcraft", max_steps=3), policy, episodes=4, split="eval",
                        skip=SKIP, batch_size=1, out_path=str(out), run={"policy": "replay"})

    straight = run(ReplayPolicy(expert_scripts), tmp_path / "straight.jsonl")
    out = tmp_path / "killed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run(DiesAfter(expert_scripts, 1), out)  # dies when the second episode starts
    assert not out.exists() and len(list((tmp_path / "killed.jsonl.parts").glob("part-*.jsonl"))) == 1
    rerun = DiesAfter(expert_scripts, 99)
    summary = run(rerun, out)
    assert rerun.tasks == [456, 168, 40]  # eval tasks 36, 456, 168, 40 from SKIP: the first was kept
    assert out.read_bytes() == (tmp_path / "straight.jsonl").read_bytes()
    assert summary.to_json() == straight.to_json()
    assert not (tmp_path / "killed.jsonl.parts").exists()
    with pytest.raises(ValueError, match="differs in .*tasks"):  # a different run is refused
        (tmp_path / "killed.jsonl.parts").mkdir()
        (tmp_path / "killed.jsonl.parts" / "part-p00000-x.jsonl").write_text(json.dumps({"run": {"tasks": [1]}}))
        run(rerun, out)
