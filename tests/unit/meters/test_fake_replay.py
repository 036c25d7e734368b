"""FakeMeter (update period, wrap, reset, exact integral) and ReplayMeter (CSV, errors)."""

from __future__ import annotations

import math

import pytest

from joulebench.errors import ConfigError
from joulebench.meters.base import MeterInfo, Method
from joulebench.meters.fake import FakeMeter
from joulebench.meters.replay import ReplayMeter
from joulebench.meters.window import EnergyWindow, measure_idle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counter_only_moves_every_update_period():
    clock = Clock()
    m = FakeMeter(100.0, clock=clock)
    clock.now = 0.05
    assert m.read().energy_j["gpu:0"] == 0.0  # no update yet
    clock.now = 0.1
    assert m.read().energy_j["gpu:0"] == pytest.approx(10.0)
    clock.now = 0.19
    assert m.read().energy_j["gpu:0"] == pytest.approx(10.0)
    clock.now = 0.2
    assert m.read().energy_j["gpu:0"] == pytest.approx(20.0)
    assert m.domains == {"gpu:0": Method.FAKE}


def test_callable_trace_integrates_exactly_through_wraps():
    clock = Clock()
    m = FakeMeter(lambda t: {"gpu:0": 100 + 50 * t, "cpu:0": 20.0}, clock=clock, wrap_at_j=30.0)
    for i in range(1, 21):
        clock.now = i * 0.1
        r = m.read()
    # ∫0^2 (100 + 50t) dt = 200 + 100 = 300 J, wrapping every 30 J
    assert r.energy_j["gpu:0"] == pytest.approx(300.0, rel=1e-9)
    assert r.energy_j["cpu:0"] == pytest.approx(40.0, rel=1e-9)
    assert m.wraps > 0
    raw = m.raw_counter_j(2.0)
    assert raw["gpu:0"] < 30.0


def test_sine_trace_matches_analytic_integral():
    clock = Clock()
    m = FakeMeter(lambda t: {"gpu:0": 100 + 50 * math.sin(t)}, clock=clock)
    clock.now = 3.0
    expected = 300 + 50 * (1 - math.cos(3.0))
    assert m.read().energy_j["gpu:0"] == pytest.approx(expected, rel=1e-6)
    assert m.exact_energy_j(3.05)["gpu:0"] == pytest.approx(
        expected + 0.05 * (100 + 50 * math.sin(3.025)), rel=1e-4
    )


def test_reset_is_counted_and_loses_only_the_gap_before_it():
    clock = Clock()
    m = FakeMeter(200.0, clock=clock, resets_at_s=[1.0])
    for i in range(1, 21):
        clock.now = i * 0.1
        r = m.read()
    assert m.resets == 1
    # energy between the read at 0.9 s and the reset at 1.0 s is lost, as on real hardware
    assert r.energy_j["gpu:0"] == pytest.approx(400.0 - 20.0)


def test_short_window_is_too_short_and_long_window_is_exact():
    clock = Clock()
    m = FakeMeter(50.0, clock=clock)
    with EnergyWindow(m, sync=lambda: None) as w:
        clock.now = 0.05
    assert w.result.too_short and w.result.energy_j is None
    clock.now = 1.0
    with EnergyWindow(m, sync=lambda: None) as w:
        clock.now = 3.0
    assert w.result.energy_j == pytest.approx(100.0)


def test_idle_baseline_gives_net_energy():
    clock = Clock()
    watts = {"gpu:0": 60.0}
    m = FakeMeter(lambda t: watts, clock=clock)

    def sleep(s: float) -> None:
        clock.now += s

    idle = measure_idle(m, 1.0, sync=lambda: None, sleep=sleep)
    assert idle.total_power_w == pytest.approx(60.0)
    watts["gpu:0"] = 60.0  # constant callable keeps the ticks exact
    with EnergyWindow(m, sync=lambda: None, idle=idle) as w:
        clock.now += 2.0
    assert w.result.net_energy_j == pytest.approx(0.0, abs=1e-9)


def test_bad_trace_is_rejected():
    with pytest.raises(ValueError, match="domain"):
        FakeMeter({"gpu0": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        FakeMeter(-1.0)
    with pytest.raises(ValueError, match="update_period_s"):
        FakeMeter(1.0, update_period_s=0)


def _write(tmp_path, text):
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return p


def test_replay_steps_through_cumulative_rows(tmp_path):
    p = _write(
        tmp_path,
        "t_s,domain,energy_j,method\n10.0,gpu:0,100,counter\n10.5,gpu:0,150,counter\n"
        "11.0,gpu:0,210,counter\n10.0,cpu:0,5,rapl\n11.0,cpu:0,25,rapl\n",
    )
    clock = Clock()
    m = ReplayMeter(p, clock=clock)
    assert m.domains == {"cpu:0": Method.REPLAY, "gpu:0": Method.REPLAY}
    assert m.update_period_s == pytest.approx(0.5)
    clock.now = 0.7
    assert m.read().energy_j == {"cpu:0": 0.0, "gpu:0": 50.0}
    clock.now = 5.0
    assert m.read().energy_j == {"cpu:0": 20.0, "gpu:0": 110.0}
    assert MeterInfo.of(m).parameters["recorded_methods"] == {"gpu:0": "counter", "cpu:0": "rapl"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t_s,domain\n0,gpu:0\n", r"trace.csv:1: .*missing energy_j"),
        (
            "t_s,domain,energy_j\n0,gpu:0,1\n0.1,gpu:0,abc\n",
            r"trace.csv:3: energy_j must be a number",
        ),
        ("t_s,domain,energy_j\n0,gpu0,1\n", r"trace.csv:2: invalid domain"),
        (
            "t_s,domain,energy_j\n0,gpu:0,5\n1,gpu:0,4\n",
            r"trace.csv:3: energy_j decreased.*not power",
        ),
        ("t_s,domain,energy_j\n1,gpu:0,5\n0,gpu:0,6\n", r"trace.csv:3: t_s 0.0 goes back"),
        ("t_s,domain,energy_j\n0,gpu:0\n", r"trace.csv:2: expected 3 columns"),
        ("t_s,domain,energy_j\n", r"no data rows"),
    ],
)
def test_replay_errors_name_the_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        ReplayMeter(_write(tmp_path, text))


def test_replay_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the replay file"):
        ReplayMeter(tmp_path / "nope.csv")
