"""A minimal OpenAI-compatible chat-completions client (standard library only).

One call = one HTTP attempt; retrying is the caller's job (atlas_jax.selection.oracle), which
uses ``OracleCallError.retryable`` and ``retry_after``. The API key is read from the
environment (ATLAS_ORACLE_API_KEY, else OPENAI_API_KEY), kept only in the request header and
never put into an error message, a log line or a file.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request

KEY_VARIABLES = ("ATLAS_ORACLE_API_KEY", "OPENAI_API_KEY")


def api_key_from_env() -> str | None:
    for name in KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


class OracleCallError(Exception):
    """A failed attempt; ``retryable`` for timeouts, connection errors, 429, 5xx and unusable bodies."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


class ChatClient:
    def __init__(self, base_url: str, model: str, *, timeout: float = 60.0, temperature: float = 0.0,
                 max_tokens: int = 1024, api_key: str | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--oracle-url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._key = api_key if api_key is not None else api_key_from_env()

    @property
    def has_key(self) -> bool:
        return bool(self._key)

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient(url={self.url!r}, model={self.model!r}, key={'set' if self._key else 'none'})"

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant message content of one chat completion."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:200].decode("utf-8", "replace") if e.fp is not None else ""
            if self._key:  # some servers echo the key they rejected
                detail = detail.replace(self._key, "***")
            retryable = e.code == 429 or e.code >= 500
            raise OracleCallError(f"HTTP {e.code} from {self.url}: {detail}", retryable,
                                  _retry_after(e.headers)) from None
        except (socket.timeout, TimeoutError):
            raise OracleCallError(f"timed out after {self.timeout:g} s ({self.url})", True) from None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise OracleCallError(f"timed out after {self.timeout:g} s ({self.url})", True) from None
            raise OracleCallError(f"cannot reach {self.url}: {reason}", True) from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise OracleCallError(f"not a chat-completions response from {self.url}: "
                                  f"{raw[:120].decode('utf-8', 'replace')!r}", True) from None
