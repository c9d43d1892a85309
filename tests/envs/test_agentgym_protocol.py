"""The AgentGym client protocol of the environments we do not host, against a small fake server.

The expected requests and answer shapes are written out by hand from AgentGym's env clients
(WooooDyy/AgentGym main, agentenv/agentenv/envs/{alfworld,webshop,lmrlgym,weather,movie,todo,
academia,sheet}.py) and the servers they talk to: the id key (``id`` or ``env_idx``), the
/create body and where its answer holds the id, the /reset body, how the first observation is
formed, what the client sends to /step (its own parse of the response) and the answer field it
reports as the reward. Also: the step limits of AgentGym's evaluation scripts, retries on
transient failures, and a server error ending one episode only."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from atlas_jax.envs.agent_loop import Reply
from atlas_jax.envs.agentgym_client import RemoteEnv
from atlas_jax.envs.agentgym_protocol import PROTOCOLS, parse_lmrlgym, parse_react
from atlas_jax.envs.evaluate import evaluate

RESPONSE = "Thought:\nI know what to do.\n\nAction:\nclick[buy now]"
TOOL = ("weather", "movie", "todo", "academia", "sheet")

# env -> (create body, /create answer, id key, id value, reset body, /reset answer, GET answers,
#         what /step must receive, /step answer key for the observation, first observation)
CASES = {
    "alfworld": (None, {"id": 7}, "id", 7, {"game": 4, "world_type": "Text"},
                 {"observation": "You are in a room.", "available_actions": ["look", "go to desk 1"], "reward": 0,
                  "done": False}, {}, "click[buy now]", "observation",
                 "You are in a room.\nAVAILABLE ACTIONS: look,go to desk 1"),
    "webshop": (None, 3, "env_idx", 3, {"session_id": 4}, [None, None],
                {"/observation": "WebShop [SEP] Instruction: [SEP] a red mug"}, "click[buy now]", "state",
                "WebShop [SEP] Instruction: [SEP] a red mug"),
    "maze": (None, {"id": 0}, "id", 0, {"game": 4}, {"observation": "The goal is at position 8, 6.", "done": False},
             {}, "click[buy now]", "observation", None),
    "wordle": (None, {"id": 2}, "id", 2, {"seed": 4}, {"done": False}, {"/filtered_vocab": ["crane", "slate"]},
               "click[buy now]", "observation", None),
    **{name: ({"id": 0}, 5, "env_idx", 5, {"id": 4}, {"done": False}, {"/observation": f"{name}: a question"},
              RESPONSE, "observation", f"{name}: a question") for name in TOOL},
}


class Fake:
    """An HTTP server answering from a table and recording every request."""

    def __init__(self, answers, fail_first=()):
        self.answers, self.requests = answers, []
        self.fail_first = set(fail_first)  # paths whose first request gets a 503
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, method):
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append((method, url.path, body if method == "POST" else query))
                if url.path in fake.fail_first:
                    fake.fail_first.discard(url.path)
                    status, answer = 503, {"detail": "busy"}
                else:
                    answer = fake.answers[url.path]
                    status, answer = (200, answer(body) if callable(answer) else answer)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._answer("GET")

            def do_POST(self):  # noqa: N802
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Fixed:
    def __init__(self, text):
        self.text = text

    def respond(self, episodes):
        return [Reply(self.text, num_tokens=1) for _ in episodes]


def play(env_name, fake, policy_text=RESPONSE, episodes=1, **options):
    return evaluate(env_name, lambda: RemoteEnv(env_name, fake.url, **options), Fixed(policy_text),
                    episodes=episodes, batch_size=1, task_indices=list(range(4, 4 + episodes)),
                    on_unparsable="continue", out_path=None)


@pytest.mark.parametrize("env_name", sorted(CASES))
def test_protocol_requests_and_first_observation(env_name):
    create_body, create_answer, key, env_id, reset_body, reset_answer, gets, sent, obs_key, first = CASES[env_name]
    step_answer = {obs_key: "Well done.", "reward": 1.0, "done": True}
    fake = Fake({"/create": create_answer, "/reset": reset_answer, "/step": step_answer, "/close": True, **gets})
    seen = []
    try:
        summary = evaluate(env_name, lambda: RemoteEnv(env_name, fake.url), Fixed(RESPONSE), episodes=1,
                           batch_size=1, task_indices=[4], on_unparsable="continue",
                           progress=lambda ep: seen.append(ep))
    finally:
        fake.stop()
    assert fake.requests[0][:2] == ("POST", "/create")
    bodies = {p: b for m, p, b in fake.requests}
    assert bodies["/create"] == create_body
    assert bodies["/reset"] == {**reset_body, key: env_id}
    assert bodies["/step"] == {"action": sent, key: env_id}
    assert bodies["/close"] == {key: env_id}
    for path in gets:
        assert bodies[path] == {key: str(env_id)}
    episode = seen[0]
    observation = episode.messages[2]["content"]
    if env_name == "maze":
        assert observation.startswith("Your objective is to reach the goal in as few steps as possible.")
        assert observation.endswith("\nThe goal is at position 8, 6.")
    elif env_name == "wordle":
        assert observation.startswith("Welcome to the game of Wordle.") and "crane\nslate" in observation
        assert "{{vocab}}" not in observation
    else:
        assert observation == first
    assert episode.messages[-1]["content"] == "Well done."
    assert summary.successes == 1 and summary.score == 100.0 and summary.end_reasons["success"] == 1
    assert summary.success_rule == PROTOCOLS[env_name].success_rule


def test_conversation_starts_are_agentgyms():
    starts = {name: RemoteEnv(name, "http://127.0.0.1:9").conversation_start for name in CASES}
    assert starts["webshop"][0]["content"].startswith("You are web shopping.\nI will give you instructions")
    assert starts["webshop"][1] == {"role": "assistant", "content": "Ok."}
    assert starts["maze"][0]["content"] == "You are an expert maze solver."
    assert starts["wordle"][0]["content"] == "You are an expert wordle player."
    assert starts["alfworld"][0]["content"].startswith("Interact with a household to solve a task.")
    assert starts["alfworld"][1]["content"] == "OK. I'll follow your instructions and try my best to solve the task."
    for name in TOOL:
        assert starts[name][0]["content"].startswith("You are an autonomous intelligent agent.")


def test_client_parsers():
    assert parse_react("Thought:\nx\n\nAction:\nclick[a]\nAction: search[b] ") == "search[b]"  # the last
    assert parse_react("I will search[red mug]") == "I will search[red mug]"  # no Action: but a webshop action
    assert parse_react("no action") == ""
    assert parse_react("Action: look</s>") == "loo"  # AgentGym's [:-5] for a 4-character '</s>'
    assert parse_lmrlgym("Thought: t\nAction: move up\nAction: move down") == "move up"  # the first
    assert parse_lmrlgym("move left") == "move left"


@pytest.mark.parametrize("env_name,rounds", [("wordle", 8), ("maze", 15), ("webshop", 10), ("alfworld", 30),
                                             ("weather", 10), ("movie", 12), ("todo", 15), ("academia", 12),
                                             ("sheet", 15)])
def test_step_limits_of_agentgym_evaluation(env_name, rounds):
    _, create_answer, _, _, _, reset_answer, gets, _, obs_key, _ = CASES[env_name]
    fake = Fake({"/create": create_answer, "/reset": reset_answer, "/close": True, **gets,
                 "/step": {obs_key: "Nothing happens.", "reward": 0, "done": False}})
    try:
        summary = play(env_name, fake)
    finally:
        fake.stop()
    assert summary.end_reasons["step_limit"] == 1 and summary.mean_turns == rounds
    assert sum(p == "/step" for _, p, _ in fake.requests) == rounds


def test_transient_failures_are_retried_and_errors_end_one_episode():
    _, create_answer, _, _, _, reset_answer, gets, _, _, _ = CASES["weather"]
    calls = []

    def step(body):
        calls.append(body)
        if len(calls) == 1:
            return {"error": "tool crashed"}  # the first episode's step fails
        return {"observation": "done", "reward": 1.0, "done": True}

    fake = Fake({"/create": create_answer, "/reset": reset_answer, "/close": True, **gets, "/step": step},
                fail_first=("/create", "/reset"))
    try:
        summary = play("weather", fake, episodes=2, retries=2)
    finally:
        fake.stop()
    assert sum(p == "/create" for _, p, _ in fake.requests) == 2  # one 503, then retried
    assert summary.end_reasons["env_error"] == 1 and summary.successes == 1 and summary.episodes == 2


def test_hosted_environments_take_limits_and_scales_from_their_classes():
    """AgentGym's evaluation scripts: BabyAI 20, TextCraft 20, SciWorld 30 rounds; SciWorld's reward is 0-100."""
    got = {name: (PROTOCOLS[name].max_rounds, PROTOCOLS[name].score_scale) for name in ("babyai", "textcraft", "sciworld")}
    assert got == {"babyai": (20, 100.0), "textcraft": (20, 100.0), "sciworld": (30, 1.0)}
