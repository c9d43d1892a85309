"""The oracle selector against a scripted OpenAI-compatible server on 127.0.0.1 (no real API)."""
from __future__ import annotations

import json
import os

import pytest

from atlas_jax.cli import main
from atlas_jax.data.mask import read_mask
from atlas_jax.data.trajectory import parse_record
from atlas_jax.selection.oracle import OracleOptions, label_trajectories
from atlas_jax.selection.oracle_client import ChatClient
from atlas_jax.selection.oracle_prompt import CRITERIA, build_messages, parse_answer
from tests.selection.conftest import ACK, agenttraj, write_jsonl
from tests.selection.fake_oracle import FakeOracle

SECRET = "sk-test-secret-123"
FAST = dict(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


def traj_record(item_id: str, n: int = 4) -> dict:
    """AgentGym's layout: step 0 the acknowledgement, steps 1..n the agent's; the goal carries the Task ID."""
    return agenttraj(item_id, [f"Thought: step {k}. Action: act {k}" for k in range(1, n + 1)],
                     task=f"Task ID: {item_id} Go to the red key.", instruction="You are an agent in a house.")


def trajs(ids):
    return [parse_record(traj_record(i), f"t.jsonl:{n}") for n, i in enumerate(ids, start=1)]


SCRIPT = {"t_good": ["good"], "t_429": ["429", "429", "good"], "t_500": ["500", "good"], "t_sleep": ["sleep", "good"],
          "t_garbage": ["garbage", "html", "good"], "t_partial": ["partial"], "t_range": ["out_of_range"],
          "t_over": ["over_cap"], "t_ack": ["names_ack"], "t_dead": ["garbage"], "t_auth": ["401"]}


def test_prompt_shows_the_task_context_and_offers_only_trainable_steps():
    """AgentGym's layout, written out: system, instruction, acknowledgement (step 0), goal, steps 1-4."""
    record = traj_record("t_good")
    record["conversations"].insert(0, {"from": "system", "value": "Be brief."})
    t = parse_record(record, "t.jsonl:1")
    system, user = build_messages(t, cap=1)  # floor(0.3 * 4 trainable steps) = 1
    text = user["content"]
    assert system["role"] == "system" and '"critical_steps"' in text and '"subgoal"' in text
    assert all(c in text for c in CRITERIA)
    for name in ("Plan Creation", "Critical Observation", "Critical Action", "Self Correction"):
        assert name in text
    assert "Only these steps may be selected: 1-4." in text
    assert "Select at most 1 critical steps in total, out of the 4 selectable steps." in text
    assert text.index("1. Plan:") < text.index("2. Critical steps:")  # sub-goals first, then steps per sub-goal
    trajectory = text[text.index("# Task context"):]
    assert trajectory == (
        "# Task context\n\n## System prompt\nBe brief.\n\n"
        "## Instructions to the agent\nYou are an agent in a house.\n\n"
        f"## Step 0 (the agent's acknowledgement; context, not selectable)\n{ACK}\n\n"
        "## Task\nTask ID: t_good Go to the red key.\n\n"
        "# Steps\n\n## Step 1\nThought: step 1. Action: act 1\n\n"
        "## Observation after step 1\nObservation: you see a red key 0 steps forward.\n\n"
        "## Step 2\nThought: step 2. Action: act 2\n\n"
        "## Observation after step 2\nObservation: you see a red key 1 steps forward.\n\n"
        "## Step 3\nThought: step 3. Action: act 3\n\n"
        "## Observation after step 3\nObservation: you see a red key 2 steps forward.\n\n"
        "## Step 4\nThought: step 4. Action: act 4")


def test_prompt_of_plain_data_numbers_steps_from_zero():
    t = parse_record(agenttraj("p", ["Action: a", "Action: b", "Action: c"], task="Go."), "p.jsonl:1")
    text = build_messages(t, cap=1)[1]["content"]
    assert "Only these steps may be selected: 0-2." in text and "acknowledgement" not in text.split("# Task context")[1]
    assert "# Task context\n\n## Task\nGo.\n\n# Steps\n\n## Step 0\nAction: a" in text


def test_labels_through_failures(tmp_path):
    ids = list(SCRIPT)
    with FakeOracle(SCRIPT, sleep_s=2.0) as server:  # margins for a loaded machine: 0.8 s timeout, 2 s sleep
        client = ChatClient(server.url, "fake-gpt", timeout=0.8, api_key=SECRET)
        sels, report = label_trajectories(trajs(ids), 0.5, client,
                                          OracleOptions(concurrency=4, cache_dir=str(tmp_path / "cache"), **FAST))
    assert sels["t_good"].ranked == [2, 1]
    assert sels["t_good"].criteria == {2: "critical_action", 1: "plan_creation"}
    assert sels["t_good"].plan.startswith("Find the key")
    for item_id in ("t_429", "t_500", "t_sleep", "t_garbage"):
        assert sels[item_id].ranked == [2, 1], item_id
    assert [server.count(i) for i in ("t_429", "t_500", "t_sleep", "t_garbage")] == [3, 2, 2, 3]
    assert sels["t_partial"].ranked == [2] and sels["t_partial"].criteria == {2: "critical_observation"}
    assert sels["t_range"].ranked == [2] and sels["t_range"].criteria == {2: "self_correction"}
    assert sels["t_over"].ranked == [3, 1]  # cap floor(0.5 * 4 trainable steps) = 2: the first two listed
    assert sels["t_ack"].ranked == [3]  # the acknowledgement (step 0) is never taken, even when named
    assert list(report.failed) == ["t_dead", "t_auth"] and "t_dead" not in sels and "t_auth" not in sels
    assert "HTTP 401" in report.failed["t_auth"] and server.count("t_auth") == 1  # not retried
    assert server.count("t_dead") == 4  # first try + 3 retries
    assert (report.labelled, report.cached, report.retried_items, report.retries) == (9, 0, 5, 9)
    assert report.notes == {"partial_json": 1, "out_of_range": 2, "over_cap": 1, "not_selectable": 1}
    assert all(auth == f"Bearer {SECRET}" for _, auth in server.requests)
    summary = report.summary()
    assert "9 labelled" in summary and "\n  1 item failed: answers with no usable step\n    items: t_dead\n" in summary
    assert f"\n  1 item failed: HTTP 401 Unauthorized from {server.url}/chat/completions (bad API key?" in summary
    cached = [open(os.path.join(root, f)).read() for root, _, files in os.walk(tmp_path / "cache") for f in files]
    assert len(cached) == 9 and not any(SECRET in c for c in cached) and SECRET not in summary + repr(client)


def test_cache_resumes_an_interrupted_run(tmp_path):
    ids = [f"t{i}" for i in range(5)]
    options = OracleOptions(concurrency=1, cache_dir=str(tmp_path / "cache"), **FAST)
    with FakeOracle({}) as server:
        client = ChatClient(server.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        calls = []
        real = client.complete

        def interrupted(messages):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the run
            return real(messages)

        client.complete = interrupted
        with pytest.raises(KeyboardInterrupt):
            label_trajectories(trajs(ids), 0.5, client, options)
        done = [i for i in ids if server.count(i)]
        assert 2 <= len(done) < 5  # a request already in flight may finish; the queued rest never start
        client.complete = real
        sels, report = label_trajectories(trajs(ids), 0.5, client, options)
    assert sorted(sels) == ids and (report.cached, report.labelled) == (len(done), 5 - len(done))
    assert all(server.count(i) == 1 for i in ids)  # nobody paid twice
    # a changed trajectory (or ratio) is a new key: asked again, not served stale
    with FakeOracle({}) as server2:
        client2 = ChatClient(server2.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        _, report2 = label_trajectories(trajs(ids), 1.0, client2, options)
    assert report2.cached == 0 and len(server2.requests) == 5


def test_select_oracle_cli_reports_failures_then_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATLAS_ORACLE_API_KEY", SECRET)
    data = write_jsonl(tmp_path / "t.jsonl", [traj_record(i) for i in ("t_good", "t_429", "t_dead", "t_range")])
    out, cache = tmp_path / "mask.jsonl", tmp_path / "cache"
    args = ["select", "--selector", "oracle", "--ratio", "0.5", "--data", data, "--out", str(out),
            "--oracle-url", None, "--oracle-model", "fake-gpt", "--oracle-cache", str(cache), "--oracle-timeout", "0.5",
            "--oracle-retries", "2", "--oracle-backoff", "0.01", "--oracle-concurrency", "2"]
    with FakeOracle(SCRIPT) as server:
        args[args.index(None)] = server.url
        assert main(args) == 1
    captured = capsys.readouterr()
    assert "1 item failed: answers with no usable step\n    items: t_dead" in captured.out
    assert "1 trajectories failed" in captured.err
    assert SECRET not in captured.out + captured.err
    mask = read_mask(out)
    assert sorted(mask) == ["t_429", "t_good", "t_range"] and mask["t_good"].critical == (1, 2)
    assert mask["t_good"].num_steps == 5  # the acknowledgement counts as step 0
    line = json.loads(open(out).readline())
    assert line["criteria"] == ["plan_creation", "critical_action"]
    assert line["selector"]["prompt_version"] == "atlas-oracle-v2"
    assert SECRET not in open(out).read()
    with FakeOracle({}) as server:  # the server recovered: only the failed item is asked again
        args[args.index("--oracle-url") + 1] = server.url
        assert main(args) == 0
        assert [i for i, _ in server.requests] == ["t_dead"]
    assert sorted(read_mask(out)) == ["t_429", "t_dead", "t_good", "t_range"]


def test_parse_answer_rejects_answers_without_a_usable_step():
    from atlas_jax.selection.oracle_prompt import OracleAnswerError
    for text in ("no json here", '{"plan": "x"}', '{"critical_steps": [{"index": 9}]}', "[1, 2]"):
        with pytest.raises(OracleAnswerError):
            parse_answer(text, num_steps=3, cap=1)
    assert parse_answer('{"critical_steps": [2, 2, 0]}', 3, 3).ranked == [2, 0]
    only_ack = '{"critical_steps": [{"index": 0}]}'
    with pytest.raises(OracleAnswerError, match="selectable"):
        parse_answer(only_ack, 3, 1, candidates=(1, 2))
    assert parse_answer('{"critical_steps": [0, 2, 1]}', 3, 1, candidates=(1, 2)).ranked == [2]


def test_api_key_comes_from_atlas_variable_then_openai(monkeypatch):
    from atlas_jax.selection.oracle_client import api_key_from_env
    monkeypatch.delenv("ATLAS_ORACLE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert api_key_from_env() == "sk-openai"
    monkeypatch.setenv("ATLAS_ORACLE_API_KEY", "sk-atlas")
    assert api_key_from_env() == "sk-atlas"
    assert "sk-atlas" not in repr(ChatClient("http://127.0.0.1:1/v1", "m"))
    with pytest.raises(ValueError, match="http"):
        ChatClient("127.0.0.1:8000/v1", "m")
