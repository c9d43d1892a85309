"""`atlas-jax serve-env`: AgentGym's routes, bodies and answers over our in-process environments
(the answers' shapes are those of agentenv-babyai/-textcraft/-sciworld's server.py and
environment.py on WooooDyy/AgentGym main), FastAPI-style 422s for malformed requests, many
instances at once, and a clean exit on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from atlas_jax.envs import make_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def call(url, path, body=None, method=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data, {"content-type": "application/json"},
                                     method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if e.headers.get("content-type") == "application/json" else text)



def test_babyai_routes_and_answers(serve):
    url = serve("babyai")
    local = make_env("babyai")
    assert call(url, "/") == (200, "This is environment BabyAI.")
    assert call(url, "/create", method="POST") == (200, {"id": 0})
    assert call(url, "/observation?id=0")[1]["observation"] == "Environment not initialized"
    status, reset = call(url, "/reset", {"id": 0, "data_idx": 3})
    assert status == 200 and reset == {"observation": local.reset(3), "reward": 0.0, "score": 0.0,
                                       "deleted": False, "done": False}
    expected = local.step_action("turn left")
    status, step = call(url, "/step", {"id": 0, "action": "turn left"})
    assert step == {"observation": expected.observation, "reward": expected.reward, "score": expected.reward,
                    "done": expected.done}
    observed = call(url, "/observation?id=0")[1]  # the goal line, then the current view
    assert observed["observation"] == reset["observation"].split("\n")[0] + "\n" + expected.observation
    assert set(observed) == {"observation", "reward", "score", "done", "deleted"}
    assert call(url, "/close", {"id": 0}) == (200, True)
    assert call(url, "/close", {"id": 0}) == (200, False)
    assert call(url, "/step", {"id": 0, "action": "turn left"}) == (200, {"error": "The id 0 is not valid."})
    assert call(url, "/create", method="POST") == (200, {"id": 1})  # ids are never reused


def test_malformed_requests_get_fastapi_answers(serve):
    url = serve("babyai")
    call(url, "/create", method="POST")
    status, body = call(url, "/step", {"id": "zero"})
    assert status == 422 and [(d["type"], d["loc"]) for d in body["detail"]] == [
        ("int_parsing", ["body", "id"]), ("missing", ["body", "action"])]
    status, body = call(url, "/step", raw=b"{not json")
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"
    status, body = call(url, "/reset", [1, 2])
    assert status == 422 and body["detail"][0]["type"] == "model_attributes_type"
    assert call(url, "/step", {"id": 0, "action": 5})[1]["detail"][0]["type"] == "string_type"
    assert call(url, "/observation")[1]["detail"][0]["loc"] == ["query", "id"]
    assert call(url, "/nowhere") == (404, {"detail": "Not Found"})
    assert call(url, "/step") == (405, {"detail": "Method Not Allowed"})
    assert call(url, "/reset", {"id": "0", "data_idx": 2.0})[0] == 200  # pydantic's lax coercion
    assert call(url, "/reset", {"id": 0, "data_idx": 10**9})[1]["error"]  # an env error is an answer, not a crash
    assert call(url, "/")[0] == 200  # still serving


def test_many_instances_in_parallel_and_a_limit(serve):
    url = serve("babyai", max_instances=4)
    ids = [call(url, "/create", method="POST")[1]["id"] for _ in range(4)]
    assert call(url, "/create", method="POST")[0] == 503  # over the limit
    results = {}

    def play(i):
        first = call(url, "/reset", {"id": i, "data_idx": i})[1]["observation"]
        steps = [call(url, "/step", {"id": i, "action": a})[1] for a in ("turn left", "turn right", "turn left")]
        results[i] = (first, [s["observation"] for s in steps])

    threads = [threading.Thread(target=play, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    local = make_env("babyai")
    for i in ids:  # each instance went through its own task, unaffected by the others
        assert results[i][0] == local.reset(i)
        assert results[i][1] == [local.step_action(a).observation for a in ("turn left", "turn right", "turn left")]
    assert call(url, "/close", {"id": ids[0]}) == (200, True)
    assert call(url, "/create", method="POST") == (200, {"id": 4})  # closing freed a place


def test_textcraft_routes(serve):
    url = serve("textcraft")
    local = make_env("textcraft")
    n = local.num_tasks()
    status, created = call(url, "/create", {"commands": None, "goal": None})
    assert created == {"id": 0, "observation": local.reset(0), "done": False, "reward": 0}  # create resets to task id
    assert call(url, "/reset", {"id": 0, "data_idx": n + 5})[1] == {
        "id": 0, "observation": local.reset(5), "done": False, "reward": 0}  # data_idx modulo the goals
    step = call(url, "/step", {"id": 0, "action": "inventory"})[1]
    expected = local.step_action("inventory")
    assert step == {"observation": expected.observation, "reward": 0, "done": False}
    assert call(url, "/observation?id=0")[1] == expected.observation
    assert call(url, "/detail?id=0")[1] == {"observation": expected.observation, "done": False, "reward": 0,
                                            "deleted": False}
    assert call(url, "/goal?id=0")[0] == 500  # AgentGym's route without a handler
    assert "error" in call(url, "/create", {"commands": "x", "goal": "y"})[1]


def test_sigterm_stops_cleanly(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "atlas_jax.cli", "serve-env", "--env", "babyai", "--port", "0",
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        assert call(url, "/create", method="POST") == (200, {"id": 0})
        assert call(url, "/reset", {"id": 0, "data_idx": 0})[0] == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out


def test_finished_babyai_episode_refuses_steps(serve):
    """AgentGym's BabyAI server answers a step on a finished task with an error (TextCraft's does not check)."""
    from .conftest import load_sample

    record = min(load_sample("babyai_train"), key=lambda r: len(r["conversations"]))
    local = make_env("babyai")
    url = serve("babyai")
    call(url, "/create", method="POST")
    call(url, "/reset", {"id": 0, "data_idx": int(record["item_id"].rsplit("_", 1)[1])})
    for turn in record["conversations"][3::2]:
        action, refused = local.parse_response(turn["value"])
        if refused is None:
            answer = call(url, "/step", {"id": 0, "action": action})[1]
    assert answer["done"] and answer["reward"] > 0 and answer["score"] == answer["reward"]
    assert call(url, "/step", {"id": 0, "action": "turn left"})[1] == {
        "error": "The task with environment 0 has finished."}
    assert call(url, "/observation?id=0")[1] == {"error": "The task with environment 0 has finished."}
