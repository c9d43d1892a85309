"""On-disk cache of oracle answers, so an interrupted or partly failed run resumes without paying twice.

Layout: ``CACHE_DIR/<prompt version>/<model>/<item_id>-<key[:16]>.json``, one file per labelled
trajectory, written atomically (outputs.atomic_write; gs:// too) only after the answer parsed. The key is the
SHA-256 of (prompt version, model, request messages): the item's text and the step cap are in
the messages, so an edited trajectory or another ratio asks again instead of reusing a stale
answer. Files hold the raw answer text, which is parsed again on read.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time

from etils import epath

from atlas_jax.outputs import atomic_write


def _safe(name: str, limit: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:limit] or "_"


class OracleCache:
    def __init__(self, root: str | os.PathLike, prompt_version: str, model: str):
        self.dir = epath.Path(root) / _safe(prompt_version) / _safe(model)
        self.prompt_version = prompt_version
        self.model = model

    def key(self, messages: list[dict[str, str]]) -> str:
        payload = json.dumps([self.prompt_version, self.model, messages], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, item_id: str, key: str) -> epath.Path:
        return self.dir / f"{_safe(item_id)}-{key[:16]}.json"

    def get(self, item_id: str, key: str) -> str | None:
        """The cached raw answer, or None (absent, unreadable, or written for another key)."""
        try:
            entry = json.loads(self.path(item_id, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("key") != key or entry.get("item_id") != item_id:
            return None
        return entry.get("content")

    def put(self, item_id: str, key: str, content: str) -> None:
        with atomic_write(self.path(item_id, key)) as f:
            json.dump({"item_id": item_id, "key": key, "prompt_version": self.prompt_version, "model": self.model,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "content": content}, f, ensure_ascii=False)
