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
from tests.selection.conftest import agenttraj, write_jsonl
from tests.selection.fake_oracle import FakeOracle

SECRET = "sk-test-secret-123"
FAST = dict(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


def traj_record(item_id: str, n: int = 4) -> dict:
    return agenttraj(item_id, [f"Thought: step {k}. Action: act {k}" for k in range(n)],
                     task=f"Task ID: {item_id} Go to the red key.")


def trajs(ids):
    return [parse_record(traj_record(i), f"t.jsonl:{n}") for n, i in enumerate(ids, start=1)]


SCRIPT = {"t_good": ["good"], "t_429": ["429", "429", "good"], "t_500": ["500", "good"], "t_sleep": ["sleep", "good"],
          "t_garbage": ["garbage", "html", "good"], "t_partial": ["partial"], "t_range": ["out_of_range"],
          "t_over": ["over_cap"], "t_dead": ["garbage"], "t_auth": ["401"]}


def test_prompt_states_criteria_cap_and_numbered_steps():
    t = trajs(["t_good"])[0]
    system, user = build_messages(t, cap=2)
    text = user["content"]
    assert all(c in text for c in CRITERIA) and "at most 2 critical steps" in text and "(0 to 3)" in text
    assert text.index("## Task") < text.index("## Step 0") < text.index("## Observation after step 0") < text.index(
        "## Step 3")
    assert '"critical_steps"' in text and system["role"] == "system"


def test_labels_through_failures(tmp_path):
    ids = list(SCRIPT)
    with FakeOracle(SCRIPT) as server:
        client = ChatClient(server.url, "fake-gpt", timeout=0.2, api_key=SECRET)
        sels, report = label_trajectories(trajs(ids), 0.5, client,
                                          OracleOptions(concurrency=4, cache_dir=str(tmp_path / "cache"), **FAST))
    assert sels["t_good"].ranked == [1, 0]
    assert sels["t_good"].criteria == {1: "critical_action", 0: "plan_creation"}
    assert sels["t_good"].plan.startswith("Find the key")
    for item_id in ("t_429", "t_500", "t_sleep", "t_garbage"):
        assert sels[item_id].ranked == [1, 0], item_id
    assert [server.count(i) for i in ("t_429", "t_500", "t_sleep", "t_garbage")] == [3, 2, 2, 3]
    assert sels["t_partial"].ranked == [1] and sels["t_partial"].criteria == {1: "critical_observation"}
    assert sels["t_range"].ranked == [1] and sels["t_range"].criteria == {1: "self_correction"}
    assert sels["t_over"].ranked == [2, 0]  # cap 2 of 4 steps: the first two listed
    assert list(report.failed) == ["t_dead", "t_auth"] and "t_dead" not in sels and "t_auth" not in sels
    assert "HTTP 401" in report.failed["t_auth"] and server.count("t_auth") == 1  # not retried
    assert server.count("t_dead") == 4  # first try + 3 retries
    assert (report.labelled, report.cached, report.retried_items, report.retries) == (8, 0, 5, 9)
    assert report.notes == {"partial_json": 1, "out_of_range": 2, "over_cap": 1}
    assert all(auth == f"Bearer {SECRET}" for _, auth in server.requests)
    summary = report.summary()
    assert "FAILED t_dead" in summary and "FAILED t_auth" in summary and "8 labelled" in summary
    cached = [open(os.path.join(root, f)).read() for root, _, files in os.walk(tmp_path / "cache") for f in files]
    assert len(cached) == 8 and not any(SECRET in c for c in cached) and SECRET not in summary + repr(client)


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
    assert "FAILED t_dead" in captured.out and "1 trajectories failed" in captured.err
    assert SECRET not in captured.out + captured.err
    mask = read_mask(out)
    assert sorted(mask) == ["t_429", "t_good", "t_range"] and mask["t_good"].critical == (0, 1)
    line = json.loads(open(out).readline())
    assert line["criteria"] == ["plan_creation", "critical_action"] and line["selector"]["prompt_version"]
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
