"""CodeCarbon meter: labels and kWh → J with a stand-in tracker; one short real offline run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from joulebench.errors import ConfigError, MeterUnavailable
from joulebench.meters.base import Method
from joulebench.meters.codecarbon import CodeCarbonMeter


class CPU:
    def __init__(self, mode: str) -> None:
        self._mode = mode


class GPU:
    pass


class Tracker:
    def __init__(
        self, hardware, *, country_iso_code, measure_power_secs, log_level, save_to_file
    ) -> None:
        kwargs = {"country_iso_code": country_iso_code, "save_to_file": save_to_file}
        self.kwargs = kwargs
        self._hardware = hardware
        self._total_cpu_energy = SimpleNamespace(kWh=0.001)
        self._total_gpu_energy = SimpleNamespace(kWh=0.0)
        self._total_ram_energy = SimpleNamespace(kWh=0.0)
        self.stopped = False

    def start(self):
        pass

    def stop(self):
        self.stopped = True

    def _measure_power_and_energy(self):
        self._total_cpu_energy.kWh += 1e-6  # 3.6 J per measurement
        self._total_gpu_energy.kWh += 2e-6
        self._total_ram_energy.kWh += 1e-7


def test_labels_and_conversion():
    made = {}

    def factory(**kw):
        made["tracker"] = Tracker([CPU("constant"), GPU()], **kw)
        return made["tracker"]

    m = CodeCarbonMeter("usa", tracker_factory=factory)
    assert made["tracker"].kwargs["country_iso_code"] == "USA"
    assert m.domains == {
        "cpu:0": Method.ESTIMATED,
        "gpu:0": Method.COUNTER,
        "ram": Method.ESTIMATED,
    }
    r = m.read()
    assert r.energy_j["cpu:0"] == pytest.approx(3.6)
    assert r.energy_j["gpu:0"] == pytest.approx(7.2)
    assert r.energy_j["ram"] == pytest.approx(0.36)
    m.close()
    assert made["tracker"].stopped


def test_rapl_cpu_is_labelled_rapl():
    m = CodeCarbonMeter(tracker_factory=lambda **kw: Tracker([CPU("intel_rapl")], **kw))
    assert m.domains == {"cpu:0": Method.RAPL, "ram": Method.ESTIMATED}


def test_bad_country_and_broken_tracker():
    with pytest.raises(ConfigError, match="alpha-3"):
        CodeCarbonMeter("France")

    def broken(**kw):
        raise RuntimeError("no CPU found")

    with pytest.raises(MeterUnavailable, match="no CPU found"):
        CodeCarbonMeter(tracker_factory=broken)


@pytest.mark.integration
def test_real_offline_tracker_reports_estimated_cpu_and_ram():
    pytest.importorskip("codecarbon")
    m = CodeCarbonMeter("FRA")
    try:
        sum(i * i for i in range(300_000))
        r = m.read()
    finally:
        m.close()
    assert m.domains["ram"] is Method.ESTIMATED
    assert m.domains["cpu:0"] in (Method.ESTIMATED, Method.RAPL)
    assert all(v >= 0 for v in r.energy_j.values())
    assert r.energy_j["cpu:0"] > 0
