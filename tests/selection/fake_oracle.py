"""A scripted OpenAI-compatible server on 127.0.0.1 for the oracle tests.

``script[item_id]`` is a list of behaviours, one per request for that item (the last repeats):
good / 429 / 500 / 401 / 403 / 404 / sleep (longer than the client timeout, then good) / hang (no answer until
the server closes) / garbage (no JSON) /
html (a body that is not a chat-completions response) / partial (JSON cut mid-way) /
out_of_range / over_cap / names_ack; items not in the script get ``default``. The item is recognised from the task line of the prompt ("Task ID: ...").
Step indices are those of the test trajectories in AgentGym's layout: step 0 is the acknowledgement
(never selectable), steps 1-4 the agent's steps.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = {"plan": "Find the key, then open the door.",
        "critical_steps": [{"index": 2, "subgoal": 1, "criterion": "critical_action", "reason": "decisive"},
                           {"index": 1, "subgoal": 1, "criterion": "plan_creation", "reason": "plans"}]}


def content_for(kind: str) -> str:
    if kind == "good":
        return "```json\n" + json.dumps(GOOD) + "\n```"
    if kind == "garbage":
        return "I believe the second step matters most."
    if kind == "partial":
        return ('{"plan": "Go.", "critical_steps": [{"index": 2, "criterion": "critical observation", '
                '"reason": "saw it"}, {"index": 1, "crit')
    if kind == "out_of_range":
        return json.dumps({"plan": "p", "critical_steps": [{"index": 99, "criterion": "critical_action"},
                                                           {"index": -1, "criterion": "critical_action"},
                                                           {"index": "2", "criterion": "self_correction"}]})
    if kind == "over_cap":
        return json.dumps({"plan": "p", "critical_steps": [{"index": k, "criterion": "critical_action"}
                                                           for k in (3, 1, 2)]})
    if kind == "names_ack":
        return json.dumps({"plan": "p", "critical_steps": [{"index": 0, "criterion": "plan_creation"},
                                                           {"index": 3, "criterion": "critical_action"}]})
    raise ValueError(kind)


class FakeOracle:
    def __init__(self, script: dict[str, list[str]], sleep_s: float = 0.5, default: str = "good"):
        self.script = script
        self.default = default
        self.closing = threading.Event()  # releases the "hang" handlers
        self.sleep_s = sleep_s
        self.requests: list[tuple[str, str | None]] = []  # (item_id, Authorization header)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                item_id = re.search(r"Task ID: (\S+)", prompt).group(1)
                with outer.lock:
                    n = sum(i == item_id for i, _ in outer.requests)
                    outer.requests.append((item_id, self.headers.get("Authorization")))
                plan = outer.script.get(item_id, [outer.default])
                kind = plan[min(n, len(plan) - 1)]
                if kind == "hang":
                    outer.closing.wait()
                    return
                if kind in ("429", "500", "401", "403", "404"):
                    return self._send(int(kind), b'{"error": "scripted"}', {"Retry-After": "0"})
                if kind == "html":
                    return self._send(200, b"<html>proxy error</html>")
                if kind == "sleep":
                    time.sleep(outer.sleep_s)
                    kind = "good"
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content_for(kind)},
                                      "finish_reason": "stop"}]}
                self._send(200, json.dumps(reply).encode())

            def _send(self, code, payload, headers=None):
                try:
                    self.send_response(code)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, item_id: str) -> int:
        return sum(i == item_id for i, _ in self.requests)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
