"""Line-by-line JSONL reading for the project's own files (masks, scores): missing files and bad
lines fail with the file and line named."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from etils import epath


def iter_jsonl(path: str | os.PathLike, what: str, error: type[Exception]) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", decoded object) for every non-blank line; ``what`` names the file kind
    in the not-found message, ``error`` is raised for a line that is not JSON."""
    path = os.fspath(path)
    if not epath.Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with epath.Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: invalid JSON at column {e.colno}: {e.msg}") from None
            yield where, obj
