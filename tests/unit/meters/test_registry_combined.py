"""Meter registry (names, combinations, auto order, errors) and CombinedMeter."""

from __future__ import annotations

import logging
import sys

import pytest

from joulebench.errors import ConfigError, MeterUnavailable, UnknownName
from joulebench.meters.base import Method
from joulebench.meters.combined import CombinedMeter
from joulebench.meters.estimate import EstimateMeter
from joulebench.meters.fake import FakeMeter
from joulebench.meters.registry import KNOWN_METERS, open_meter, probe_all


@pytest.fixture(autouse=True)
def no_sensors(monkeypatch, tmp_path):
    """Pretend this machine has no NVML (whatever it really has)."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_unknown_meter_lists_known_ones():
    with pytest.raises(UnknownName) as info:
        open_meter("nvlm")
    assert "nvml" in str(info.value) and "estimate" in str(info.value) and "auto" in str(info.value)
    with pytest.raises(UnknownName):
        open_meter("fake+bogus")


def test_bad_specs_and_options():
    with pytest.raises(ConfigError, match="twice"):
        open_meter("fake+fake")
    with pytest.raises(ConfigError, match="cannot be combined"):
        open_meter("auto+fake")
    with pytest.raises(ConfigError, match="invalid meter spec"):
        open_meter("fake+")
    with pytest.raises(ConfigError, match="cpu_tdp_w"):
        open_meter("estimate", cpu_tdp_w=-1)
    with pytest.raises(ConfigError, match="no_such_option"):
        open_meter("estimate", no_such_option=1)


def test_unavailable_meters_say_why_and_how(tmp_path):
    with pytest.raises(MeterUnavailable, match="joulebench\\[gpu\\]"):
        open_meter("nvml")
    with pytest.raises(MeterUnavailable, match="powercap"):
        open_meter("rapl", rapl_root=tmp_path / "none")
    with pytest.raises(MeterUnavailable, match="--prometheus-url"):
        open_meter("prometheus")
    with pytest.raises(MeterUnavailable, match="--replay-path"):
        open_meter("replay")


def test_auto_falls_back_to_estimator_loudly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        m = open_meter("auto", rapl_root=tmp_path / "none", cpu_tdp_w=50.0)
    assert isinstance(m, EstimateMeter)
    assert m.cpu_tdp_w == 50.0
    assert "ESTIMATE" in caplog.text
    assert "fell back" in m.parameters()["selection_note"]


def test_auto_uses_rapl_when_present(tmp_path):
    z = tmp_path / "intel-rapl:0"
    z.mkdir()
    (z / "name").write_text("package-0")
    (z / "energy_uj").write_text("5")
    (z / "max_energy_range_uj").write_text("100")
    m = open_meter("auto", rapl_root=tmp_path)
    assert m.name == "rapl" and m.domains == {"cpu:0": Method.RAPL}


def test_combination_and_probe_all():
    m = open_meter("fake+estimate", fake_power_w=10.0)
    assert m.name == "fake+estimate"
    assert m.domains == {"cpu:0": Method.ESTIMATED, "gpu:0": Method.FAKE, "ram": Method.ESTIMATED}
    m.close()
    probes = probe_all()
    assert set(probes) == set(KNOWN_METERS)
    assert probes["estimate"].available and not probes["nvml"].available
    assert probes["nvml"].hint


def test_combined_meter_merges_and_rejects_conflicts():
    t = [0.0]
    a = FakeMeter({"gpu:0": 100.0}, clock=lambda: t[0], name="a")
    b = FakeMeter({"cpu:0": 20.0}, update_period_s=0.5, clock=lambda: t[0], name="b")
    c = CombinedMeter([a, b])
    assert c.update_period_s == 0.5
    t[0] = 1.0
    assert c.read().energy_j == {"gpu:0": pytest.approx(100.0), "cpu:0": pytest.approx(20.0)}
    assert set(c.parameters()) == {"a", "b"}
    with pytest.raises(ConfigError, match="both measure gpu:0"):
        CombinedMeter([a, FakeMeter({"gpu:0": 1.0}, name="x")])
