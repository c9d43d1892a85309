"""Scores JSONL (the output of `atlas-jax score`), one line per trajectory:

    {"item_id", "num_steps", "scorer": {"model", "dtype", "variants", "seq_len"},
     "steps": [{"index", "tokens", "nll_sum", "nll_mean", "entropy_mean",
                "nll_mean_prompt_only", "ifd", "nll_mean_no_obs", "obs_dependence", "truncated"}]}

Metrics are nats per token; null where a sequence had to be cut to seq_len (``truncated``); ifd and
obs_dependence are null for context steps (``loss: false``), obs_dependence also for the first
trainable step (it follows the task context, not an observation). nll_mean_prompt_only/ifd and
nll_mean_no_obs/obs_dependence are present only when their variant ran.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable

from atlas_jax.jsonl import ReadReport, iter_jsonl, skip_or_raise
from atlas_jax.outputs import atomic_write

STEP_FIELDS = ("index", "tokens", "nll_sum", "nll_mean", "entropy_mean", "nll_mean_prompt_only", "ifd",
               "nll_mean_no_obs", "obs_dependence", "truncated")
METRICS = ("nll_sum", "nll_mean", "entropy_mean", "nll_mean_prompt_only", "ifd", "nll_mean_no_obs",
           "obs_dependence", "tokens")


class ScoresError(ValueError):
    """Bad scores input; the message names file, line and item_id."""


def write_scores(path: str | os.PathLike, records: Iterable[dict], scorer: dict | None = None) -> int:
    """Write records atomically (outputs.atomic_write, gs:// too); returns the number written."""
    n = 0
    with atomic_write(path) as f:
        for rec in records:
            out = {"item_id": rec["item_id"], "num_steps": rec["num_steps"]}
            if scorer:
                out["scorer"] = scorer
            out["steps"] = rec["steps"]
            f.write(json.dumps(out, allow_nan=False) + "\n")
            n += 1
    return n


def _check_step(step, k: int, at: str) -> None:
    if not isinstance(step, dict) or step.get("index") != k:
        raise ScoresError(f"{at}: steps[{k}] must be an object with index {k}")
    tokens = step.get("tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise ScoresError(f"{at}: steps[{k}].tokens must be a non-negative integer, got {tokens!r}")
    for name in METRICS:
        value = step.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value)):
            raise ScoresError(f"{at}: steps[{k}].{name} must be a finite number or null, got {value!r}")


def _check_record(rec, where: str, out: dict) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("item_id"), str):
        raise ScoresError(f"{where}: scores record needs a string 'item_id'")
    at = f"{where} item_id={rec['item_id']!r}"
    steps = rec.get("steps")
    if not isinstance(steps, list) or rec.get("num_steps") != len(steps):
        raise ScoresError(f"{at}: 'steps' must be a list of num_steps={rec.get('num_steps')!r} entries")
    for k, step in enumerate(steps):
        _check_step(step, k, at)
    if rec["item_id"] in out:
        raise ScoresError(f"{at}: duplicate item_id")


def read_scores(path: str | os.PathLike, *, on_error: str = "raise",
                report: ReadReport | None = None) -> dict[str, dict]:
    """{item_id: record}; every line and step is validated. A bad line is an error, or with
    ``on_error="skip"`` is left out and counted in ``report``."""
    out: dict[str, dict] = {}
    for where, rec in iter_jsonl(path, "scores file", ScoresError, on_error=on_error, report=report):
        try:
            _check_record(rec, where, out)
        except ScoresError as e:
            skip_or_raise(e, on_error, report)
            continue
        rec["source"] = where
        out[rec["item_id"]] = rec
        if report is not None:
            report.used += 1
    return out
