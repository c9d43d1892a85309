"""Reading the project's input files (trajectories, masks, scores) line by line, with the file and
line named in every error, decoding errors included, and one skip-or-raise policy for bad records.

Lines are split on b"\\n" and decoded one at a time, so a bad byte costs only its own line (and
U+2028 inside a JSON string does not split a record, as str.splitlines would).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Iterator

from etils import epath

ON_ERROR = ("raise", "skip")


@dataclasses.dataclass
class ReadReport:
    """Counts of one read; ``rejected`` maps reason -> count."""

    read: int = 0
    used: int = 0
    rejected: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def summary(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in self.rejected.most_common())
        return f"read {self.read}, used {self.used}, rejected {sum(self.rejected.values())}" + (
            f" ({why})" if why else "")


def input_error(error: type[Exception], where: str, reason: str, what: str) -> Exception:
    """``error("where: what")`` carrying ``reason`` (the ReadReport bucket when the record is skipped)."""
    err = error(f"{where}: {what}")
    err.reason = reason
    return err


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def skip_or_raise(err: Exception, on_error: str, report: ReadReport | None) -> None:
    """Raise ``err`` (on_error "raise"), else count it in ``report`` as rejected."""
    if on_error == "raise":
        raise err
    if report is not None:
        report.reject(getattr(err, "reason", "invalid"))


def check_input_file(path: str | os.PathLike, what: str) -> str:
    """The path as a string, or an OSError naming it when it is missing or a directory."""
    path = os.fspath(path)
    if epath.Path(path).is_dir():
        raise IsADirectoryError(f"{what} is a directory, expected a file: {path}")
    if not epath.Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def decode_utf8(raw: bytes, where: str, error: type[Exception]) -> str:
    """``raw`` as text, or ``error`` "where: not valid UTF-8 at byte N (0xXX)" (N counts from 1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise input_error(error, where, "not valid UTF-8",
                          f"not valid UTF-8 at byte {e.start + 1} (0x{raw[e.start]:02x}); the file must be "
                          "UTF-8 encoded") from None


NEWLINE = b"\n"


def decode_document(raw: bytes, name: str, error: type[Exception]) -> str:
    """A whole file's bytes as text, or ``error`` "name:line: not valid UTF-8 at byte N (0xXX)", N
    counted from the start of that line as for a JSONL line. A leading byte-order mark is dropped."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(NEWLINE, 0, e.start) + 1
        decode_utf8(raw[line_start:e.end], f"{name}:{raw.count(NEWLINE, 0, e.start) + 1}", error)
        raise  # not reached: the line alone fails to decode at the same byte


def iter_json_lines(path: str, error: type[Exception]) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", decoded object, or an ``error`` instance for a line that is not UTF-8 or
    not JSON) for every non-blank line of an existing file; the caller raises or skips errors."""
    with epath.Path(path).open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is not JSON
                raw = raw[3:]
            try:
                line = decode_utf8(raw, where, error)
            except error as e:
                yield where, e
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, input_error(error, where, "bad JSON", f"invalid JSON at column {e.colno}: {e.msg}")


def iter_jsonl(path: str | os.PathLike, what: str, error: type[Exception], *, on_error: str = "raise",
               report: ReadReport | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", decoded object) for every good non-blank line; ``what`` names the file kind
    in the not-found message, ``error`` is the exception for a bad line, which ``on_error="skip"``
    counts in ``report`` instead (``report.read`` counts every record line)."""
    check_on_error(on_error)
    path = check_input_file(path, what)
    for where, obj in iter_json_lines(path, error):
        if report is not None:
            report.read += 1
        if isinstance(obj, error):
            skip_or_raise(obj, on_error, report)
            continue
        yield where, obj
