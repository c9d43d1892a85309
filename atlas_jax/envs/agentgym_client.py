"""An AgentGym environment server as a :class:`TextEnv`: `atlas-jax eval --server URL`.

``RemoteEnv`` speaks one environment's protocol (:mod:`atlas_jax.envs.agentgym_protocol`) to
any AgentGym server (AgentGym's own or ``atlas-jax serve-env``), so the agent loop, step limits
and episode records are the in-process ones. The client parse of a response (and the
client's own refusals) happens here, as in AgentGym's env clients; the server gets the action.

Transport: standard library HTTP with a per-request timeout. Transient failures (connection
refused or reset before the request was sent, HTTP 502/503/504, a timeout on a request that is
safe to repeat) are retried with backoff; ``/step`` is never repeated after a timeout (the server
may have applied it). Anything else, or an ``{"error": ...}`` answer, raises
:class:`ServerError`, which ends that episode as ``env_error`` with the reason recorded.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from atlas_jax.envs.agentgym_protocol import (PARSERS, PROTOCOLS, Protocol, client_texts, conversation_start,
                                              env_class, fill_template)
from atlas_jax.envs.base import StepResult, TextEnv

TRANSIENT_STATUS = (502, 503, 504)


class ServerError(RuntimeError):
    """The server failed or answered with an error; the message says which request and why."""


class HttpJson:
    """JSON over HTTP to one base URL, with timeouts and retries on transient failures."""

    def __init__(self, base_url: str, timeout: float = 300.0, retries: int = 3, backoff: float = 0.5):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None,
                repeatable: bool = True) -> Any:
        url = f"{self.base_url}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method),
                                            timeout=self.timeout) as reply:
                    return json.loads(reply.read() or b"null")
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                last = f"HTTP {e.code}: {detail}"
                if e.code not in TRANSIENT_STATUS:
                    break
            except (ConnectionRefusedError, ConnectionResetError) as e:
                last = f"{type(e).__name__}: {e}"
            except urllib.error.URLError as e:
                last = f"{type(e.reason).__name__}: {e.reason}"
                if isinstance(e.reason, (socket.timeout, TimeoutError)) and not repeatable:
                    break
                if not isinstance(e.reason, (ConnectionRefusedError, ConnectionResetError, socket.timeout,
                                             TimeoutError, socket.gaierror)):
                    break
            except (socket.timeout, TimeoutError) as e:
                last = f"timeout after {self.timeout} s ({e})"
                if not repeatable:
                    break
            except json.JSONDecodeError as e:
                last = f"answer is not JSON ({e})"
                break
        raise ServerError(f"{method} {url}: {last}")


class RemoteEnv(TextEnv):
    """One instance on an AgentGym server (created on first reset, closed by ``close``)."""

    def __init__(self, env_name: str, server: str, max_steps: int | None = None, *, timeout: float = 300.0,
                 retries: int = 3):
        if env_name not in PROTOCOLS:
            raise ValueError(f"--server: no AgentGym protocol for {env_name!r}; expected one of {sorted(PROTOCOLS)}")
        self.protocol: Protocol = PROTOCOLS[env_name]
        self.name = env_name
        self.default_max_steps = self.protocol.max_rounds
        super().__init__(max_steps)
        self.http = HttpJson(server, timeout=timeout, retries=retries)
        self.conversation_start = conversation_start(self.protocol)
        self.instruction = self.conversation_start[0]["content"]
        self.score_scale = self.protocol.score_scale
        self.env_id: Any = None
        self.vocab: list[str] | None = None
        self.last_observation = ""

    # -- TextEnv -----------------------------------------------------------------------
    def num_tasks(self) -> int:
        raise NotImplementedError("a remote server does not report its task count; give the task indices")

    def check_index(self, task_index: int) -> None:
        if task_index < 0:
            raise ValueError(f"{self.name}: task index {task_index} is negative")

    def _call(self, method: str, path: str, payload: dict | None = None, repeatable: bool = True) -> Any:
        key = self.protocol.id_key
        if method == "GET":
            answer = self.http.request("GET", path, query={key: self.env_id})
        else:
            answer = self.http.request("POST", path, {**(payload or {}), key: self.env_id}, repeatable=repeatable)
        if isinstance(answer, dict) and "error" in answer:
            raise ServerError(f"{path}: the server answered an error: {answer['error']}")
        return answer

    def _create(self) -> None:
        body = self.protocol.create_body
        answer = self.http.request("POST", "create", None if body is None else dict(body))
        if isinstance(answer, dict) and "error" in answer:
            raise ServerError(f"create: the server answered an error: {answer['error']}")
        try:
            self.env_id = answer if self.protocol.id_in_answer is None else answer[self.protocol.id_in_answer]
        except (KeyError, TypeError):
            raise ServerError(f"create: no {self.protocol.id_in_answer!r} in the answer {str(answer)[:200]}") from None
        if self.protocol.first_observation == "wordle":
            self.vocab = self._call("GET", "filtered_vocab")

    def _reset(self, task_index: int) -> str:
        if self.env_id is None:
            self._create()
        answer = self._call("POST", "reset", self.protocol.reset_body(task_index))
        self.last_observation = self._first_observation(answer)
        return self.last_observation

    def _first_observation(self, answer: Any) -> str:
        how = self.protocol.first_observation
        try:
            if how == "reset":
                return answer["observation"]
            if how == "sciworld":
                return answer["task_description"] + "\n" + answer["observation"]
            if how == "alfworld":
                return f"{answer['observation']}\nAVAILABLE ACTIONS: {','.join(answer['available_actions'])}"
            if how == "get":
                return self._call("GET", "observation")
            template = client_texts()[self.name]["first_observation"]
            if how == "maze":
                return template + "\n" + answer["observation"]
            if how == "wordle":
                return fill_template(template, vocab="\n".join(self.vocab or []))
        except (KeyError, TypeError) as e:
            raise ServerError(f"reset: unexpected answer {str(answer)[:200]} ({type(e).__name__}: {e})") from None
        raise ValueError(f"{self.name}: unknown first-observation rule {how!r}")

    def parse_response(self, response: str) -> tuple[str | None, StepResult | None]:
        if self.protocol.parse == "env":  # the hosted env's own client parse: one parser for both paths
            return env_class(self.protocol).parse_response(self, response)
        return PARSERS[self.protocol.parse](response), None

    def step_action(self, action: str) -> StepResult:
        answer = self._call("POST", "step", {"action": action}, repeatable=False)
        try:
            observation = answer[self.protocol.observation_key]
            reward, done = float(answer[self.protocol.reward_key]), bool(answer["done"])
        except (KeyError, TypeError, ValueError) as e:
            raise ServerError(f"step: unexpected answer {str(answer)[:200]} ({type(e).__name__}: {e})") from None
        self.last_observation = observation
        success = self.protocol.success(reward, done)
        return StepResult(observation, reward, done or success, success, {"action": action})

    def close(self) -> None:
        if self.env_id is not None:
            try:
                self._call("POST", "close")
            except ServerError:
                pass  # closing is best effort: the episode's outcome is already recorded
            self.env_id = None
