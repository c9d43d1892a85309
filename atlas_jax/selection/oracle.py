"""The oracle selector: label every trajectory with an LLM, with retries, a cache, a circuit breaker
and a full report.

    selections, report = label_trajectories(trajectories, ratio=0.3, client=ChatClient(url, model),
                                            options=OracleOptions(cache_dir="oracle-cache"))

Each trajectory is one request (bounded concurrency). An attempt fails on a timeout, a
connection error, HTTP 429/5xx (retried with exponential backoff and jitter, honouring
Retry-After) or an answer with no usable step (retried: sampling may do better); other HTTP
errors (401, 404, ...) fail the item at once. Items that still fail are listed in the report,
never given an empty mask. Answers go to the cache as soon as they parse.

The circuit breaker stops the run when the server is evidently unusable: ``max_auth_failures``
consecutive 401/403/404 answers (bad key, URL or model: every item would fail alike) or
``max_server_failures`` consecutive server failures (5xx, timeouts, refused connections) across
all items. Requests in flight finish; nothing else is sent (``report.stopped`` says why and
``report.not_sent`` lists the items), and a rerun resumes from the cache.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import random
import sys
import threading
from typing import Sequence

from atlas_jax.data.trajectory import Trajectory
from atlas_jax.selection.oracle_cache import OracleCache
from atlas_jax.selection.oracle_client import AUTH, SERVER, ChatClient, OracleCallError
from atlas_jax.selection.oracle_prompt import PROMPT_VERSION, OracleAnswerError, build_messages, parse_answer
from atlas_jax.selection.selectors import Selection, trajectory_cap


@dataclasses.dataclass(frozen=True)
class OracleOptions:
    concurrency: int = 8
    max_retries: int = 2  # extra attempts per item after the first
    backoff_s: float = 2.0  # first retry delay; doubles per retry, with jitter
    max_backoff_s: float = 30.0  # any one delay, Retry-After included
    max_auth_failures: int = 3  # consecutive 401/403/404 before stopping; 0: never stop
    max_server_failures: int = 5  # consecutive 5xx/timeouts/connection failures before stopping; 0: never
    cache_dir: str | None = None
    max_chars: int = 2000  # per turn in the prompt
    progress: bool | None = None  # a progress bar on stderr; None: only when stderr is a terminal

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError(f"oracle concurrency must be at least 1, got {self.concurrency}")
        for name in ("max_retries", "max_auth_failures", "max_server_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"oracle {name.replace('_', ' ')} must be non-negative, got {getattr(self, name)}")


@dataclasses.dataclass
class OracleReport:
    requested: int = 0
    labelled: int = 0  # answered by the server in this run
    cached: int = 0  # taken from the cache
    retried_items: int = 0
    retries: int = 0
    failed: dict = dataclasses.field(default_factory=dict)  # item_id -> last error, in full
    failure_headlines: dict = dataclasses.field(default_factory=dict)  # item_id -> its error's headline
    not_sent: list = dataclasses.field(default_factory=list)  # items never asked: the breaker stopped the run
    stopped: str | None = None  # why the circuit breaker stopped the run, with the last error's headline
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # kinds of failed attempts

    @property
    def missing(self) -> int:
        return len(self.failed) + len(self.not_sent)

    def summary(self, max_items: int = 10) -> str:
        lines = [f"oracle ({PROMPT_VERSION}): {self.requested} trajectories: {self.labelled} labelled, "
                 f"{self.cached} from cache, {len(self.failed)} failed"
                 + (f", {len(self.not_sent)} not sent" if self.not_sent else "")
                 + f"; {self.retried_items} items retried ({self.retries} retries)"]
        if self.errors:
            lines.append("  failed attempts: " + ", ".join(f"{n} {k}" for k, n in self.errors.most_common()))
        if self.notes:
            lines.append("  answer fixes: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in
                                                         self.notes.most_common())
                         + (" (kept the first steps up to the cap)" if self.notes.get("over_cap") else ""))
        groups: dict[str, list[str]] = {}
        for item_id in self.failed:
            groups.setdefault(self.failure_headlines[item_id], []).append(item_id)
        for headline, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(items)} {'item' if len(items) == 1 else 'items'} failed: {headline}")
            lines.append("    items: " + ", ".join(items[:max_items])
                         + (f" and {len(items) - max_items} more" if len(items) > max_items else ""))
            details = (self.failed[i].removeprefix(headline).removeprefix(": ") for i in items)
            details = [d for d in dict.fromkeys(details) if d]
            lines.extend(f"    detail: {d}" for d in details[:3])
        if self.stopped:
            lines.append(f"  STOPPED after {self.stopped.split(': ')[0]}; {len(self.not_sent)} items were not sent")
        return "\n".join(lines)


def _error_kind(e: Exception) -> str:
    return "unusable answer" if isinstance(e, OracleAnswerError) else e.kind


class _Breaker:
    """Consecutive auth and server failures over all items (in the order they happen); any answer
    from the server resets both streaks. ``stop`` is set when one reaches its limit (or on Ctrl-C)."""

    def __init__(self, max_auth: int, max_server: int):
        self.limits = {AUTH: max_auth, SERVER: max_server}
        self.streaks = {AUTH: 0, SERVER: 0}
        self.stop = threading.Event()
        self.reason: str | None = None

    def record(self, error: Exception | None) -> None:  # under the report lock
        category = getattr(error, "category", None)
        if category not in self.streaks:
            if not isinstance(error, OracleCallError):  # an answer (usable or not): the server works
                self.streaks = {AUTH: 0, SERVER: 0}
            return
        other = SERVER if category == AUTH else AUTH
        self.streaks[category] += 1
        self.streaks[other] = 0
        limit = self.limits[category]
        if limit and self.streaks[category] >= limit and not self.stop.is_set():
            what = "auth/URL failures (HTTP 401/403/404)" if category == AUTH else "server failures"
            self.reason = f"{self.streaks[category]} consecutive {what}: {error.headline}"
            self.stop.set()


def label_trajectories(trajectories: Sequence[Trajectory], ratio: float, client: ChatClient,
                       options: OracleOptions = OracleOptions()) -> tuple[dict[str, Selection], OracleReport]:
    """{item_id: Selection} for the items labelled (now or from the cache), and the report."""
    from tqdm import tqdm

    report = OracleReport(requested=len(trajectories))
    cache = OracleCache(options.cache_dir, PROMPT_VERSION, client.model) if options.cache_dir else None
    lock = threading.Lock()
    breaker = _Breaker(options.max_auth_failures, options.max_server_failures)
    out: dict[str, Selection] = {}

    def accept(traj, answer):
        with lock:
            report.notes.update(answer.notes)
            out[traj.item_id] = Selection(traj.item_id, traj.num_steps, answer.ranked, answer.criteria, answer.plan)

    def label_one(traj: Trajectory, messages, key, cap, bar) -> None:
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
                breaker.stop.wait(delay)  # wakes at once when the run is stopped
            if breaker.stop.is_set():
                break
            try:
                content = client.complete(messages)
                answer = parse_answer(content, traj.num_steps, cap, traj.trainable_steps)
            except (OracleCallError, OracleAnswerError) as e:
                error = e
                with lock:
                    report.errors[_error_kind(e)] += 1
                    breaker.record(e)
                if isinstance(e, OracleCallError) and not e.retryable:
                    break
                continue
            with lock:
                breaker.record(None)
            if cache is not None:
                cache.put(traj.item_id, key, content)
            accept(traj, answer)
            with lock:
                report.labelled += 1
                bar.update(1)
                bar.set_postfix(_postfix(report), refresh=False)
            return
        with lock:
            if error is None:  # stopped before its first attempt
                report.not_sent.append(traj.item_id)
                return
            report.failed[traj.item_id] = str(error)
            report.failure_headlines[traj.item_id] = getattr(error, "headline", "answers with no usable step")
            bar.update(1)
            bar.set_postfix(_postfix(report), refresh=False)

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

    disable = None if options.progress is None else not options.progress  # tqdm: None = off unless a TTY
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=options.concurrency)
    with tqdm(total=len(trajectories), initial=report.cached, desc="oracle", unit="item", file=sys.stderr,
              disable=disable, dynamic_ncols=True, postfix=_postfix(report)) as bar:
        try:
            futures = [pool.submit(label_one, *args, bar) for args in todo]
            for future in concurrent.futures.as_completed(futures):
                future.result()
        finally:  # on Ctrl-C: no new request and no retry; what finished is already cached
            if not breaker.stop.is_set():
                breaker.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
    report.stopped = breaker.reason
    order = {t.item_id: i for i, t in enumerate(trajectories)}
    report.failed = dict(sorted(report.failed.items(), key=lambda kv: order[kv[0]]))
    report.not_sent.sort(key=order.__getitem__)
    return {t.item_id: out[t.item_id] for t in trajectories if t.item_id in out}, report


def _postfix(report: OracleReport) -> dict:
    return {"cached": report.cached, "failed": len(report.failed)}
