"""The oracle against a broken server on 127.0.0.1 (bad key, 5xx, no answer, nothing listening):
the run stops early, says exactly what went wrong, keeps what finished and says how to resume."""
from __future__ import annotations

import dataclasses
import os
import socket
import time

import pytest

from atlas_jax.cli import main
from atlas_jax.data.mask import read_mask
from atlas_jax.selection.oracle import OracleOptions, label_trajectories
from atlas_jax.selection.oracle_client import ChatClient, OracleCallError
from tests.selection.conftest import write_jsonl
from tests.selection.fake_oracle import FakeOracle
from tests.selection.test_oracle import SECRET, traj_record, trajs

IDS = [f"t{i:02d}" for i in range(20)]
KEY_HINT = "bad API key? it comes from ATLAS_ORACLE_API_KEY, else OPENAI_API_KEY"


def select_args(data, out, cache, url, *extra):
    return ["select", "--selector", "oracle", "--ratio", "0.5", "--data", data, "--out", str(out), "--oracle-url",
            url, "--oracle-model", "fake-gpt", "--oracle-cache", str(cache), "--oracle-backoff", "0.01", *extra]


def cache_files(cache) -> list[str]:
    return sorted(f for _, _, files in os.walk(cache) for f in files)


def test_bad_key_stops_after_three_items_keeps_the_cache_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATLAS_ORACLE_API_KEY", SECRET)
    first = write_jsonl(tmp_path / "first.jsonl", [traj_record(i) for i in IDS[:2]])
    data = write_jsonl(tmp_path / "all.jsonl", [traj_record(i) for i in IDS])
    out, cache = tmp_path / "mask.jsonl", tmp_path / "cache"
    with FakeOracle({}) as server:  # an earlier run labelled two items
        assert main(select_args(first, out, cache, server.url)) == 0
    os.remove(out)
    capsys.readouterr()
    with FakeOracle({}, default="401") as server:  # then the key was revoked
        url = server.url
        assert main(select_args(data, out, cache, url, "--oracle-concurrency", "1")) == 1
        assert len(server.requests) == 3  # not 18
    err = capsys.readouterr().err
    assert not out.exists()  # no mask of 2 items out of 20
    headline = f"HTTP 401 Unauthorized from {url}/chat/completions ({KEY_HINT})"
    assert (f"atlas-jax select: oracle stopped: 3 consecutive auth/URL failures (HTTP 401/403/404): "
            f"{headline}; no mask written; the 2 answers so far are cached in {cache}; rerun the same command to "
            "ask only for the 18 missing items") in err
    assert len(cache_files(cache)) == 2 and SECRET not in err
    with FakeOracle({}) as server:  # key fixed: only the 18 missing items are asked
        assert main(select_args(data, out, cache, server.url)) == 0
        assert sorted(i for i, _ in server.requests) == IDS[2:]
    assert sorted(read_mask(out)) == IDS


def test_summary_names_status_url_and_hint_per_failure_kind(tmp_path, capsys):
    with FakeOracle({}, default="401") as server:
        client = ChatClient(server.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        _, report = label_trajectories(trajs(IDS), 0.5, client,
                                       OracleOptions(concurrency=1, cache_dir=str(tmp_path / "c"), progress=False))
    headline = f"HTTP 401 Unauthorized from {server.url}/chat/completions ({KEY_HINT})"
    assert report.summary().splitlines() == [
        "oracle (atlas-oracle-v2): 20 trajectories: 0 labelled, 0 from cache, 3 failed, 17 not sent; "
        "0 items retried (0 retries)",
        "  failed attempts: 3 HTTP 401 Unauthorized",
        f"  3 items failed: {headline}",
        "    items: t00, t01, t02",
        '    detail: {"error": "scripted"}',
        "  STOPPED after 3 consecutive auth/URL failures (HTTP 401/403/404); 17 items were not sent"]
    with FakeOracle({"t00": ["404"], "t01": ["403"]}) as server:
        client = ChatClient(server.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        sels, report = label_trajectories(trajs(IDS[:4]), 0.5, client, OracleOptions(progress=False))
    assert sorted(sels) == ["t02", "t03"] and report.stopped is None  # two, not three in a row: no stop
    url = f"{server.url}/chat/completions"
    assert set(report.failure_headlines.values()) == {
        f"HTTP 404 Not Found from {url} (wrong --oracle-url or --oracle-model? the URL is the API base, "
        "e.g. http://host:8000/v1)",
        f"HTTP 403 Forbidden from {url} (the key may not use this model or endpoint)"}


def test_server_errors_stop_after_five_consecutive_attempts(tmp_path, capsys):
    with FakeOracle({}, default="500") as server:
        client = ChatClient(server.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        options = OracleOptions(concurrency=1, max_retries=2, backoff_s=0.01, progress=False)
        _, report = label_trajectories(trajs(IDS), 0.5, client, options)
    assert [server.count(i) for i in IDS[:3]] == [3, 2, 0] and len(server.requests) == 5
    assert list(report.failed) == ["t00", "t01"] and report.not_sent == IDS[2:]
    assert set(report.failure_headlines.values()) == {
        f"HTTP 500 Internal Server Error from {server.url}/chat/completions"}
    assert report.stopped == ("5 consecutive server failures: HTTP 500 Internal Server Error from "
                              f"{server.url}/chat/completions")


def test_a_server_that_never_answers_is_given_up_after_one_read_timeout(tmp_path):
    """The default options (8 in flight, stop after 5 server failures) against a server that takes
    requests and never answers: the first wave times out together and the run stops, so giving up
    takes one read timeout (60 s by default), not retries x timeout x waves."""
    options = dataclasses.replace(OracleOptions(), cache_dir=str(tmp_path / "c"), progress=False)
    with FakeOracle({}, default="hang") as server:
        client = ChatClient(server.url, "fake-gpt", timeout=0.5, api_key=SECRET)
        start = time.monotonic()
        _, report = label_trajectories(trajs(IDS), 0.5, client, options)
        elapsed = time.monotonic() - start
    # without the breaker: 3 waves x 3 attempts x 0.5 s plus 2 + 4 s of backoff per wave, over 20 s
    assert elapsed < 5.0, elapsed  # one 0.5 s timeout; backoff sleeps end when the run stops
    assert report.errors == {"no answer within 0.5 s": 8} and len(report.failed) == 8 and len(report.not_sent) == 12
    headline = (f"no answer within 0.5 s from {server.url}/chat/completions (server stuck or overloaded? a slow "
                "model needs a larger --oracle-timeout)")
    assert list(report.failure_headlines.values()) == [headline] * 8
    assert report.stopped == f"5 consecutive server failures: {headline}"


def test_nothing_listening_stops_early_with_a_clear_reason(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    client = ChatClient(url, "fake-gpt", timeout=2.0, api_key=SECRET)
    start = time.monotonic()
    _, report = label_trajectories(trajs(IDS), 0.5, client,
                                   OracleOptions(concurrency=2, backoff_s=0.01, progress=False))
    assert time.monotonic() - start < 5.0
    assert report.stopped == (f"5 consecutive server failures: connection refused from {url}/chat/"
                              "completions (is the server running on this host and port?)")
    assert 5 <= sum(report.errors.values()) <= 6 and len(report.not_sent) >= 16  # at most 1 in flight when it stopped


def test_connect_timeout_is_separate_from_the_read_timeout():
    """A listener whose backlog is full drops new connection attempts, as a dead host does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue (the kernel keeps backlog + 1 connections)
                c = socket.socket()
                c.settimeout(0.2)
                try:
                    c.connect(("127.0.0.1", port))
                except OSError:
                    c.close()
                    break
                fillers.append(c)
            else:
                pytest.skip("this kernel accepts every connection attempt; cannot simulate a dead host")
            client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", timeout=30.0, connect_timeout=0.3, api_key="k")
            start = time.monotonic()
            with pytest.raises(OracleCallError) as e:
                client.complete([{"role": "user", "content": "hi"}])
            assert time.monotonic() - start < 5.0
        finally:
            for c in fillers:
                c.close()
    assert e.value.kind == "no connection within 0.3 s" and e.value.category == "server" and e.value.retryable


def test_progress_bar_shows_done_cached_failed(tmp_path, capsys):
    cache = str(tmp_path / "c")
    with FakeOracle({}) as server:
        client = ChatClient(server.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        label_trajectories(trajs(IDS[:2]), 0.5, client, OracleOptions(cache_dir=cache, progress=False))
    capsys.readouterr()
    with FakeOracle({"t02": ["401"]}) as server:
        client = ChatClient(server.url, "fake-gpt", timeout=2.0, api_key=SECRET)
        label_trajectories(trajs(IDS[:5]), 0.5, client, OracleOptions(cache_dir=cache, progress=True))
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("oracle: 100%") and "5/5 [" in bar and "cached=2, failed=1]" in bar

