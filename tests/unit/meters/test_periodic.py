"""The one sampling loop (meters/periodic.py): its schedule, its end, its errors."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from joulebench.meters.periodic import Periodic


def test_ticks_until_stopped_and_not_after():
    times: list[float] = []
    p = Periodic(lambda: times.append(time.monotonic()), 0.01, name="t")
    p.start()
    deadline = time.monotonic() + 5.0
    while len(times) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    p.stop()
    n = len(times)
    time.sleep(0.05)
    assert n >= 3 and len(times) == n and not p.alive
    assert times == sorted(times)


def test_a_tick_returning_false_ends_the_loop_and_a_failing_tick_does_not(caplog):
    calls = {"n": 0}
    done = threading.Event()

    def tick() -> bool:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("sensor hiccup")
        if calls["n"] == 4:
            done.set()
            return False
        return True

    seen: list[Exception] = []
    p = Periodic(tick, 0.005, name="ticker-under-test", on_error=seen.append)
    with caplog.at_level(logging.ERROR):
        p.start()
        assert done.wait(2.0)
        p.join(2.0)
    assert not p.alive and calls["n"] == 4
    assert "ticker-under-test: a tick failed" in caplog.text
    assert [str(e) for e in seen] == ["sensor hiccup"]  # handed to the caller, once
    p.stop()  # stopping an ended loop is harmless


def test_refuses_a_second_start_and_a_non_positive_period():
    p = Periodic(lambda: None, 30.0, name="once")
    p.start()
    with pytest.raises(RuntimeError, match="already started"):
        p.start()
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 15.0  # stop wakes the wait, it does not sleep 30 s out
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="period must be positive"):
            Periodic(lambda: None, bad, name="bad")
