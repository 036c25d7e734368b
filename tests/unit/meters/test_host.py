"""Other processes' CPU during a window (joulebench.meters.host), with scripted and real sources."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest

from joulebench.meters.host import (
    ContentionLog,
    ContentionPolicy,
    HostContention,
    HostMonitor,
    HostWindow,
    summarize_host,
    wait_for_quiet,
    watch,
)


class Script:
    """Cumulative CPU seconds that advance by a scripted amount at each read."""

    def __init__(self, steps: list[float]) -> None:
        self.steps = iter(steps)
        self.total = 0.0

    def __call__(self) -> float:
        self.total += next(self.steps, 0.0)
        return self.total


def test_share_is_busy_minus_ours_over_wall_time():
    w = HostWindow(duration_s=2.0, busy_cpu_s=3.1, own_cpu_s=2.0)
    assert w.other_cpu_s == pytest.approx(1.1)
    assert w.other_cores == pytest.approx(0.55)
    # the two counters tick apart: ours a tick above the machine's is no one else, not negative
    assert HostWindow(1.0, 0.99, 1.0).other_cores == 0.0
    assert summarize_host([w, HostWindow(1.0, 1.0, 1.0)]) == {
        "windows": 2,
        "other_cores_mean": pytest.approx(0.275),
        "other_cores_max": pytest.approx(0.55),
        "gpu_processes": [],
    }


def test_monitor_reads_scripted_sources():
    clock = itertools.count(0.0, 4.0).__next__  # 4 s between reads
    host = HostMonitor(busy_cpu_s=Script([10.0, 6.0]), own_cpu_s=Script([5.0, 3.0]), clock=clock)
    w = host.between(host.read(), host.read())
    assert (w.duration_s, w.busy_cpu_s, w.own_cpu_s) == (4.0, 6.0, 3.0)
    assert w.other_cores == pytest.approx(0.75)


def _host(other_per_read: list[float]) -> HostMonitor:
    """1 s between reads; each read adds ``other`` core-seconds of someone else's time."""
    clock = itertools.count(0.0, 1.0).__next__
    return HostMonitor(busy_cpu_s=Script(other_per_read), own_cpu_s=lambda: 0.0, clock=clock)


def test_flag_keeps_a_busy_window_and_fail_refuses_it():
    runs = []
    res, w = watch(lambda: runs.append(1) or "r", _host([0.0, 0.5]), ContentionPolicy(),
                   ContentionLog(), what="w")  # fmt: skip
    assert res == "r" and w.other_cores == pytest.approx(0.5) and len(runs) == 1
    with pytest.raises(HostContention, match=r"0\.500 cores.*--on-contention fail"):
        watch(lambda: None, _host([0.0, 0.5]), ContentionPolicy(mode="fail"),
              ContentionLog(), what="w")  # fmt: skip
    quiet, w = watch(lambda: "q", _host([0.0, 0.01]), ContentionPolicy(mode="fail"),
                     ContentionLog(), what="w")  # fmt: skip
    assert quiet == "q" and w.other_cores == pytest.approx(0.01)


def test_wait_waits_for_quiet_then_reruns_the_window():
    # window 1 busy (0.9 cores); probe: busy, then quiet ×3 (quiet_s=2 at 1 s per read); window 2
    host = _host([0.0, 0.9, 0.0, 0.8])  # then quiet
    sleeps: list[float] = []
    log = ContentionLog()
    runs = []
    policy = ContentionPolicy(mode="wait", quiet_s=2.0, poll_s=1.0)
    clock = itertools.count(0.0, 1.0).__next__
    _, w = watch(lambda: runs.append(1), host, policy, log, what="w", clock=clock,
                 sleep=sleeps.append)  # fmt: skip
    assert len(runs) == 2 and w.other_cores == 0.0
    assert log.reruns == 1 and log.discarded_other_cores == [pytest.approx(0.9)]
    assert log.waited_s > 0 and sleeps and all(s == 1.0 for s in sleeps)


def test_wait_caps_reruns_then_flags():
    neighbour = [0.0]  # busy only while a window runs: the waits are quiet, the re-runs busy

    def window() -> None:
        neighbour[0] += 0.9

    clock = itertools.count(0.0, 1.0).__next__
    host = HostMonitor(busy_cpu_s=lambda: neighbour[0], own_cpu_s=lambda: 0.0, clock=clock)
    policy = ContentionPolicy(mode="wait", quiet_s=2.0, poll_s=1.0, max_reruns=2)
    log = ContentionLog()
    _, w = watch(window, host, policy, log, what="w", clock=clock, sleep=lambda s: None)
    assert log.reruns == 2 and neighbour[0] == pytest.approx(2.7)  # 1 + 2 re-runs, then flagged
    assert policy.busy(w) and len(log.discarded_other_cores) == 2


def test_wait_for_quiet_gives_up_at_its_budget():
    host = _host([0.0] + [0.9] * 50)
    quiet, waited = wait_for_quiet(
        host, ContentionPolicy(quiet_s=3.0, poll_s=1.0), budget_s=5.0,
        clock=itertools.count(0.0, 1.0).__next__, sleep=lambda s: None,
    )  # fmt: skip
    assert not quiet and waited >= 5.0


SPIN = "import time, sys\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"


def beside_spinner(make_host: Callable[[psutil.Process], HostMonitor]) -> HostWindow:
    """One 1-s host window while a child process spins a core (it stops by itself after 3 s)."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN, "3.0"])
    try:
        time.sleep(0.3)  # started
        host = make_host(psutil.Process(proc.pid))
        r0 = host.read()
        time.sleep(1.0)
        return host.between(r0, host.read())
    finally:
        proc.kill()
        proc.wait()


def test_a_real_busy_process_is_seen_by_the_system_source():
    # the spinner is our child, hence "ours" by default: here "ours" is this process alone
    me = psutil.Process(os.getpid())
    w = beside_spinner(lambda child: HostMonitor(own_cpu_s=lambda: sum(me.cpu_times()[:2])))
    assert w.other_cores > 0.5  # the spinner alone is about one core
    assert ContentionPolicy().busy(w)


def test_our_children_are_ours_not_foreign():
    # busy = the child's own time only, so the machine's other users do not enter the test
    w = beside_spinner(lambda child: HostMonitor(busy_cpu_s=lambda: sum(child.cpu_times()[:2])))
    # the child ran (a shared machine may give it less than a core); it is ours, not foreign
    assert w.busy_cpu_s > 0.1 and w.other_cores < 0.05


def test_a_share_within_the_counters_resolution_is_not_busy():
    short = HostWindow(duration_s=0.3, busy_cpu_s=0.02, own_cpu_s=0.0)  # two ticks of someone
    assert short.other_cores == pytest.approx(0.0667, abs=1e-3)
    assert short.resolution_cores == pytest.approx(0.0667, abs=1e-3)
    assert not ContentionPolicy().busy(short)
    assert ContentionPolicy().busy(HostWindow(duration_s=0.3, busy_cpu_s=0.05, own_cpu_s=0.0))
