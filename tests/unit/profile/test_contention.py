"""A busy process beside a profile: recorded per window, audited, refused or waited out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from joulebench.analysis import audit
from joulebench.analysis.stats import StoppingRule
from joulebench.meters.fake import FakeMeter
from joulebench.meters.host import ContentionPolicy, HostContention, HostMonitor
from joulebench.meters.neighbour import CpuOf, spin_neighbour
from joulebench.profile.phases import Phase, WindowSettings, measure_idle_watched, measure_repeated
from joulebench.profile.result import phase_audits


@pytest.fixture
def busy() -> Iterator[psutil.Process]:
    proc = spin_neighbour(4.0)
    yield proc
    if proc.is_running():
        proc.kill()


def _measure(**kwargs):  # type: ignore[no-untyped-def]
    return measure_repeated(
        lambda: time.sleep(0.01),
        FakeMeter(20.0, update_period_s=0.02),
        WindowSettings(
            rule=StoppingRule(ci_target=0.5, min_repeats=2, max_repeats=2),
            min_window_s=0.3,
            warmup=0,
            **kwargs,
        ),
        phase=Phase.PREFILL,
        method="direct",
    )


def test_busy_neighbour_is_recorded_and_fails_quiet_host(busy):
    assert busy.pid not in {p.pid for p in psutil.Process().children(recursive=True)}
    m = _measure(host=HostMonitor())
    assert all(r.host is not None and r.host["other_cores"] > 0.5 for r in m.repeats)
    assert m.host is not None and m.host["other_cores_mean"] > 0.5
    row = m.repeats[0].to_row()
    assert row["domains"]["host"]["other_cores"] > 0.5  # stored with the repeat
    checks = {c.name: c for c in phase_audits(m, None, None, 0.02)}
    assert not checks["prefill/direct:quiet_host"].passed
    assert "above 0.05" in checks["prefill/direct:quiet_host"].detail


def test_fail_aborts_beside_a_busy_neighbour(busy):
    with pytest.raises(HostContention, match="prefill/direct window 0: other processes used"):
        _measure(host=HostMonitor(), contention=ContentionPolicy(mode="fail"))


def test_idle_baseline_is_watched_too(busy):
    idle = measure_idle_watched(FakeMeter(20.0, update_period_s=0.02), 0.3, host=HostMonitor())
    assert idle.host is not None and idle.host["other_cores"] > 0.5
    assert idle.to_dict()["host"]["other_cores"] > 0.5
    assert not audit.quiet_host([idle.to_dict()["host"]], scope="idle").passed
    with pytest.raises(HostContention, match="idle baseline"):
        measure_idle_watched(
            FakeMeter(), 0.3, host=HostMonitor(), contention=ContentionPolicy(mode="fail")
        )


def test_wait_waits_out_a_neighbour_that_stops():
    proc = spin_neighbour(1.5)
    # only the neighbour counts as "other" here, so the rest of a shared machine cannot stall it
    host = HostMonitor(busy_cpu_s=CpuOf(proc), own_cpu_s=lambda: 0.0)
    policy = ContentionPolicy(mode="wait", quiet_s=0.4, poll_s=0.1, max_wait_s=10.0)
    t0 = time.monotonic()
    try:
        m = _measure(host=host, contention=policy)
    finally:
        if proc.is_running():
            proc.kill()
    elapsed = time.monotonic() - t0
    assert m.contention is not None and m.contention["reruns"] >= 1
    assert m.contention["waited_s"] >= 0.4
    assert all(r.host is not None and r.host["other_cores"] <= 0.05 for r in m.repeats)
    assert m.host is not None and m.host["reruns"] == m.contention["reruns"]
    assert elapsed < 8.0  # bounded: the neighbour stops after 1.5 s
