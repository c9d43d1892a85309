"""The BabyAI bot's time limit: a replan that loops forever must end the episode, even when the
first alarm lands inside a callback that swallows exceptions."""
from __future__ import annotations

import gc
import sys
import time

import pytest

from atlas_jax.envs.babyai_expert import NoPlan, time_limit


def test_a_swallowed_alarm_is_repeated_until_the_loop_ends():
    swallowed, armed = [], []

    def swallowing_callback(phase, info):
        # like JAX's _xla_gc_callback, where Python drops what a gc callback raises: the first alarm
        # lands here (this callback burns CPU past the limit once) and is dropped
        if swallowed or not armed:  # (gc also runs outside the limit, e.g. in pytest's own code)
            return
        start = time.process_time()
        try:
            while time.process_time() - start < 1.0:
                pass
        except NoPlan as e:
            swallowed.append(e)

    gc.callbacks.append(swallowing_callback)
    start = time.process_time()
    try:
        with pytest.raises(NoPlan, match="the bot timed out: 0.3 s"):
            with time_limit(0.3):
                armed.append(True)
                gc.collect(0)
                while time.process_time() - start < 5:  # a replan() that never returns
                    sum(range(1000))
                pytest.fail("the swallowed alarm was never repeated")
    finally:
        gc.callbacks.remove(swallowing_callback)
    assert len(swallowed) == 1
    assert time.process_time() - start < 2  # CPU seconds: the repeat ended the loop soon after


def test_limit_counts_cpu_time_not_sleep():
    with time_limit(0.2):
        time.sleep(0.5)  # waiting costs no CPU: no timeout


def test_a_swallowed_alarm_is_not_printed_but_other_unraisable_errors_are(monkeypatch):
    # "Exception ignored in: <function _xla_gc_callback ...> NoPlan: the bot timed out" filled the
    # experts log; any other exception Python cannot raise must still reach the hook
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(type(info.exc_value).__name__))

    class RaisesOnDelete:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    with time_limit(60):
        RaisesOnDelete(NoPlan("the bot timed out", "10 s"))
        RaisesOnDelete(ValueError("not the alarm"))
        gc.collect()
    assert seen == ["ValueError"]
    RaisesOnDelete(NoPlan("outside the limit", ""))
    gc.collect()
    assert seen == ["ValueError", "NoPlan"]  # the hook is restored on exit
