"""The oracle selector: label every trajectory with an LLM, with retries, a cache and a full report.

    selections, report = label_trajectories(trajectories, ratio=0.3, client=ChatClient(url, model),
                                            options=OracleOptions(cache_dir="oracle-cache"))

Each trajectory is one request (bounded concurrency). An attempt fails on a timeout, a
connection error, HTTP 429/5xx (retried with exponential backoff and jitter, honouring
Retry-After) or an answer with no usable step (retried: sampling may do better); other HTTP
errors (401, 404, ...) fail the item at once. Items that still fail are listed in the report,
never given an empty mask. Answers go to the cache as soon as they parse.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import random
import threading
import time
from typing import Callable, Sequence

from atlas_jax.data.trajectory import Trajectory
from atlas_jax.selection.oracle_cache import OracleCache
from atlas_jax.selection.oracle_client import ChatClient, OracleCallError
from atlas_jax.selection.oracle_prompt import PROMPT_VERSION, OracleAnswerError, build_messages, parse_answer
from atlas_jax.selection.selectors import Selection, trajectory_cap


@dataclasses.dataclass(frozen=True)
class OracleOptions:
    concurrency: int = 8
    max_retries: int = 4  # extra attempts per item after the first
    backoff_s: float = 1.0  # first retry delay; doubles per retry, with jitter
    max_backoff_s: float = 60.0
    cache_dir: str | None = None
    max_chars: int = 2000  # per turn in the prompt

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError(f"oracle concurrency must be at least 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"oracle retries must be non-negative, got {self.max_retries}")


@dataclasses.dataclass
class OracleReport:
    requested: int = 0
    labelled: int = 0  # answered by the server in this run
    cached: int = 0  # taken from the cache
    retried_items: int = 0
    retries: int = 0
    failed: dict = dataclasses.field(default_factory=dict)  # item_id -> last error
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # kinds of failed attempts

    def summary(self) -> str:
        lines = [f"oracle ({PROMPT_VERSION}): {self.requested} trajectories: {self.labelled} labelled, "
                 f"{self.cached} from cache, {len(self.failed)} failed; {self.retried_items} items retried "
                 f"({self.retries} retries)"]
        if self.errors:
            lines.append("  failed attempts: " + ", ".join(f"{n} {k}" for k, n in self.errors.most_common()))
        if self.notes:
            lines.append("  answer fixes: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in
                                                         self.notes.most_common())
                         + (" (kept the first steps up to the cap)" if self.notes.get("over_cap") else ""))
        for item_id, why in self.failed.items():
            lines.append(f"  FAILED {item_id}: {why}")
        return "\n".join(lines)


def _error_kind(e: Exception) -> str:
    text = str(e)
    if isinstance(e, OracleAnswerError):
        return "unusable answer"
    if text.startswith("HTTP "):
        return text.split(":")[0]
    return "timeout" if "timed out" in text else "connection/response error"


def label_trajectories(trajectories: Sequence[Trajectory], ratio: float, client: ChatClient,
                       options: OracleOptions = OracleOptions(),
                       sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, Selection], OracleReport]:
    """{item_id: Selection} for the items labelled (now or from the cache), and the report."""
    report = OracleReport(requested=len(trajectories))
    cache = OracleCache(options.cache_dir, PROMPT_VERSION, client.model) if options.cache_dir else None
    lock = threading.Lock()
    out: dict[str, Selection] = {}

    def accept(traj, answer):
        with lock:
            report.notes.update(answer.notes)
            out[traj.item_id] = Selection(traj.item_id, traj.num_steps, answer.ranked, answer.criteria, answer.plan)

    def label_one(traj: Trajectory, messages, key, cap) -> None:
        error: Exception | None = None
        for attempt in range(options.max_retries + 1):
            if attempt:
                delay = min(options.max_backoff_s, options.backoff_s * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
                if isinstance(error, OracleCallError) and error.retry_after is not None:
                    delay = min(options.max_backoff_s, max(delay, error.retry_after))
                with lock:
                    report.retries += 1
                    report.retried_items += attempt == 1
                sleep(delay)
            try:
                content = client.complete(messages)
                answer = parse_answer(content, traj.num_steps, cap, traj.trainable_steps)
            except (OracleCallError, OracleAnswerError) as e:
                error = e
                with lock:
                    report.errors[_error_kind(e)] += 1
                if isinstance(e, OracleCallError) and not e.retryable:
                    break
                continue
            if cache is not None:
                cache.put(traj.item_id, key, content)
            accept(traj, answer)
            with lock:
                report.labelled += 1
            return
        with lock:
            report.failed[traj.item_id] = str(error)

    todo = []
    for traj in trajectories:
        cap = trajectory_cap(traj, ratio)
        messages = build_messages(traj, cap, options.max_chars)
        key = cache.key(messages) if cache is not None else ""
        cached = cache.get(traj.item_id, key) if cache is not None else None
        if cached is not None:
            try:
                accept(traj, parse_answer(cached, traj.num_steps, cap, traj.trainable_steps))
                report.cached += 1
                continue
            except OracleAnswerError:
                pass  # a cache entry the current parser rejects: ask again
        todo.append((traj, messages, key, cap))

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=options.concurrency)
    try:
        futures = [pool.submit(label_one, *args) for args in todo]
        for future in concurrent.futures.as_completed(futures):
            future.result()
    finally:  # on Ctrl-C, drop what has not started; what finished is already cached
        pool.shutdown(wait=True, cancel_futures=True)
    order = {t.item_id: i for i, t in enumerate(trajectories)}
    report.failed = dict(sorted(report.failed.items(), key=lambda kv: order[kv[0]]))
    return {t.item_id: out[t.item_id] for t in trajectories if t.item_id in out}, report
