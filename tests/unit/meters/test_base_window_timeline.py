"""Tests of the meter layer's shared pieces: counter accumulation, windows, idle, timeline."""

from __future__ import annotations

import itertools
import time

import pytest

from joulebench.errors import MeterUnavailable
from joulebench.meters.base import CounterAccumulator, MeterInfo, Method, Reading, check_domain
from joulebench.meters.timeline import PowerTimeline
from joulebench.meters.window import EnergyWindow, measure_idle


class ScriptedMeter:
    """Constant power on one domain against a manual clock (no sleeping)."""

    name = "scripted"

    def __init__(self, power_w: float, update_period_s: float = 0.1) -> None:
        self.power_w = power_w
        self.now = 0.0
        self.domains = {"gpu:0": Method.FAKE}
        self.update_period_s = update_period_s

    def read(self) -> Reading:
        return Reading(self.now, {"gpu:0": self.power_w * self.now})

    def close(self) -> None:
        pass


def test_counter_wraps_at_max_range():
    acc = CounterAccumulator(90.0, max_range=100.0)
    assert acc.update(95.0) == 5.0
    assert acc.update(3.0) == 13.0  # wrapped: 95 → 100 → 3
    assert acc.wraps == 1 and acc.resets == 0


def test_counter_reset_without_range_counts_from_zero():
    acc = CounterAccumulator(1000.0)
    acc.update(1010.0)
    assert acc.update(4.0) == 14.0
    assert acc.resets == 1


def test_domain_names_are_validated():
    assert check_domain("gpu:3") == "gpu:3"
    assert check_domain("ram") == "ram"
    with pytest.raises(ValueError, match="invalid energy domain"):
        check_domain("gpu0")


def test_window_reports_energy_net_of_idle():
    meter = ScriptedMeter(power_w=200.0)
    idle = measure_idle(
        meter, 1.0, sync=lambda: None, sleep=lambda s: setattr(meter, "now", meter.now + s)
    )
    assert idle.total_power_w == pytest.approx(200.0)
    meter.power_w = 200.0
    with EnergyWindow(meter, sync=lambda: None, idle=idle) as w:
        meter.now += 2.0
    assert w.result.energy_j == pytest.approx(400.0)
    assert w.result.net_energy_j == pytest.approx(0.0, abs=1e-9)
    assert w.result.to_dict()["domains"][0]["method"] == "fake"


def test_idle_baseline_on_a_stuck_clock_is_a_user_error():
    meter = ScriptedMeter(power_w=50.0)  # its clock only moves when the test moves it
    with pytest.raises(MeterUnavailable, match="clock did not advance"):
        measure_idle(meter, 1.0, sync=lambda: None, sleep=lambda s: None)


def test_unknown_domain_net_energy_names_the_domains():
    meter = ScriptedMeter(power_w=100.0)
    with EnergyWindow(meter, sync=lambda: None) as w:
        meter.now += 1.0
    assert w.result.domain_net_j(w.result.domain_names[0]) is None  # no idle baseline
    with pytest.raises(KeyError, match="domains"):
        w.result.domain_net_j("gpu:9")


def test_window_shorter_than_update_period_reports_no_number(caplog):
    meter = ScriptedMeter(power_w=100.0, update_period_s=0.1)
    with EnergyWindow(meter, sync=lambda: None) as w:
        meter.now += 0.05
    assert w.result.too_short
    assert w.result.energy_j is None
    assert w.result.to_dict()["domains"][0]["energy_j"] is None
    assert "shorter than meter" in caplog.text


def test_window_syncs_at_both_edges():
    calls = []
    meter = ScriptedMeter(10.0)
    with EnergyWindow(meter, sync=lambda: calls.append(meter.now)):
        meter.now += 1.0
    assert calls == [0.0, 1.0]


def test_meter_info_records_methods_and_parameters():
    meter = ScriptedMeter(1.0)
    meter.parameters = lambda: {"cpu_tdp_w": 65}  # type: ignore[attr-defined]
    info = MeterInfo.of(meter)
    assert info.methods == {"gpu:0": "fake"}
    assert info.parameters == {"cpu_tdp_w": 65}
    assert not info.is_estimated
    assert info.method_label == "fake"
    mixed = MeterInfo("m", {"gpu:0": "counter", "cpu:0": "rapl", "ram": "estimated"}, 0.1)
    assert mixed.method_label == "counter+estimated+rapl" and mixed.is_estimated
    assert MeterInfo("none", {}, 0.1).method_label == "unknown"


def test_timeline_interpolates_and_derives_power():
    meter = ScriptedMeter(50.0)
    tl = PowerTimeline(meter, hz=10)
    for t in (0.0, 1.0, 2.0):
        meter.now = t
        tl.sample_now()
    assert tl.energy_at(0.5) == pytest.approx(25.0)
    assert tl.energy_between(0.5, 1.5) == pytest.approx(50.0)
    assert tl.energy_at(10.0) == pytest.approx(100.0)  # clamped to the covered span
    assert [p for _, p in tl.power_w()] == [pytest.approx(50.0)] * 2


def test_timeline_thread_samples_at_its_rate():
    clock = itertools.count()

    class Counting(ScriptedMeter):
        def read(self) -> Reading:
            self.now = time.monotonic()
            next(clock)
            return super().read()

    meter = Counting(1.0)
    with PowerTimeline(meter, hz=50) as tl:
        time.sleep(0.5)
    n = len(tl.samples)
    assert 10 <= n <= 40  # ≈25 + the two edge samples; loose bounds for a loaded machine


def test_timeline_rejects_non_positive_rate():
    with pytest.raises(ValueError, match="positive"):
        PowerTimeline(ScriptedMeter(1.0), hz=0)


def test_full_timeline_stops_sampling_with_one_warning(caplog):
    meter = ScriptedMeter(1.0)
    tl = PowerTimeline(meter, hz=200, max_samples=3)
    with tl:
        time.sleep(0.2)
        tl._ticker.join(timeout_s=2)  # the sampler ends by itself once full
        assert not tl.sampling
    assert len(tl.samples) == 3
    assert caplog.text.count("sampling stopped") == 1
    assert "does not cover the span" in caplog.text
