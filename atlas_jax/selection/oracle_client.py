"""A minimal OpenAI-compatible chat-completions client (standard library only).

One call = one HTTP attempt; retrying and the circuit breaker are the caller's job
(atlas_jax.selection.oracle), which reads ``OracleCallError.category``, ``retryable`` and
``retry_after``. Two timeouts: a short one to connect (a dead host fails in seconds) and a longer
one for the answer (a model needs time to write it). The API key is read from the environment
(ATLAS_ORACLE_API_KEY, else OPENAI_API_KEY), kept only in the request header and never put into
an error message, a log line or a file.
"""
from __future__ import annotations

import http
import http.client
import json
import os
import socket
import urllib.error
import urllib.request

KEY_VARIABLES = ("ATLAS_ORACLE_API_KEY", "OPENAI_API_KEY")
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0

# what a failed attempt says about the server, for the circuit breaker
AUTH = "auth"  # 401/403/404: every item will fail the same way (key, URL or model name)
SERVER = "server"  # 5xx, timeouts, refused or broken connections, non-API responses
OTHER = "other"  # 429 and item-specific rejections (400, 413, 422, ...): no verdict on the server


def api_key_from_env() -> str | None:
    for name in KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


class OracleCallError(Exception):
    """A failed attempt. ``headline`` is the same for every item that failed the same way
    ("HTTP 401 Unauthorized from URL (bad API key?)"); str() adds the server's own words."""

    def __init__(self, kind: str, url: str, *, category: str, retryable: bool, hint: str = "", detail: str = "",
                 retry_after: float | None = None):
        self.kind, self.url, self.category, self.retryable = kind, url, category, retryable
        self.retry_after = retry_after
        self.headline = f"{kind} from {url}" + (f" ({hint})" if hint else "")
        super().__init__(self.headline + (f": {detail}" if detail else ""))


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


class _ConnectTimeout(TimeoutError):
    pass


def _two_timeouts(base):
    """``base`` (HTTP(S)Connection) connecting under ``connect_s`` and then reading under ``read_s``."""

    class Connection(base):
        connect_s = read_s = None

        def connect(self):
            self.timeout = self.connect_s
            try:
                super().connect()  # TCP, proxy tunnel and TLS handshake
            except (socket.timeout, TimeoutError):
                raise _ConnectTimeout() from None
            self.sock.settimeout(self.read_s)

    return Connection


def _opener(connect_s: float, read_s: float):
    classes = {}
    for name, base in (("http", http.client.HTTPConnection), ("https", http.client.HTTPSConnection)):
        classes[name] = type(f"{name}_conn", (_two_timeouts(base),), {"connect_s": connect_s, "read_s": read_s})

    class HTTPHandler(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(classes["http"], req, **kwargs)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(classes["https"], req, **kwargs)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)  # proxies from the environment still apply


_HINTS = {401: "bad API key? it comes from ATLAS_ORACLE_API_KEY, else OPENAI_API_KEY",
          403: "the key may not use this model or endpoint",
          404: "wrong --oracle-url or --oracle-model? the URL is the API base, e.g. http://host:8000/v1",
          429: "rate limited", 413: "prompt too large for the server"}


class ChatClient:
    def __init__(self, base_url: str, model: str, *, timeout: float = READ_TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, temperature: float = 0.0, max_tokens: int = 1024,
                 api_key: str | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--oracle-url must start with http:// or https://, got {base_url!r}")
        for name, value in (("--oracle-timeout", timeout), ("--oracle-connect-timeout", connect_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._key = api_key if api_key is not None else api_key_from_env()
        self._opener = _opener(connect_timeout, timeout)

    @property
    def has_key(self) -> bool:
        return bool(self._key)

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient(url={self.url!r}, model={self.model!r}, key={'set' if self._key else 'none'})"

    def _scrub(self, text: str) -> str:  # some servers echo the key they rejected
        return text.replace(self._key, "***") if self._key else text

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant message content of one chat completion."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        fail = lambda kind, category, hint="", detail="": OracleCallError(  # noqa: E731
            kind, self.url, category=category, retryable=category != AUTH, hint=hint, detail=detail)
        try:
            with self._opener.open(request) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = self._scrub(e.read()[:300].decode("utf-8", "replace").strip()) if e.fp is not None else ""
            try:
                phrase = http.HTTPStatus(e.code).phrase
            except ValueError:
                phrase = str(e.reason or "")
            code = e.code
            category = AUTH if code in (401, 403, 404) else SERVER if code >= 500 else OTHER
            hint = _HINTS.get(code, "")
            if code == 401 and not self._key:
                hint = "no API key: set ATLAS_ORACLE_API_KEY or OPENAI_API_KEY"
            raise OracleCallError(f"HTTP {code} {phrase}".strip(), self.url, category=category,
                                  retryable=code == 429 or code >= 500, hint=hint, detail=detail,
                                  retry_after=_retry_after(e.headers)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, _ConnectTimeout):
                raise fail(f"no connection within {self.connect_timeout:g} s", SERVER,
                           "host down or unreachable? --oracle-connect-timeout sets the limit") from None
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise fail(f"no answer within {self.timeout:g} s", SERVER,
                           "server stuck or overloaded? a slow model needs a larger --oracle-timeout") from None
            if isinstance(reason, ConnectionRefusedError):
                raise fail("connection refused", SERVER, "is the server running on this host and port?") from None
            raise fail("connection failed", SERVER, detail=self._scrub(str(reason))) from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise fail("not a chat-completions response", SERVER, "is --oracle-url an OpenAI-compatible API?",
                       repr(raw[:120].decode("utf-8", "replace"))) from None
