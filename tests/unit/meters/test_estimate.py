"""Sensorless estimator: deterministic with an injected clock and CPU-time sources."""

from __future__ import annotations

import time

import pytest

from joulebench.errors import ConfigError
from joulebench.meters.base import MeterInfo, Method
from joulebench.meters.estimate import DEFAULT_RAM_W_PER_GB, EstimateMeter, lookup_cpu


class Source:
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def make(scope="process", **kw):
    clock, cpu, system = Source(), Source(), Source()
    m = EstimateMeter(
        scope=scope,
        clock=clock,
        cpu_times=cpu,
        system_cpu_times=system,
        memory_gb=lambda: 2.0,
        model="Test CPU",
        visible_threads=8,
        **kw,
    )
    return m, clock, cpu, system


def test_process_scope_model_is_exact_and_labelled_estimated():
    m, clock, cpu, system = make(cpu_tdp_w=80.0, cpu_threads=8, cpu_idle_w=10.0, ram_w_per_gb=0.5)
    clock.value, cpu.value, system.value = 2.0, 1.5, 3.0  # 1.5 of 3 busy CPU-seconds are ours
    r = m.read()
    # active: 1.5 s × 80/8 W = 15 J; idle share: 10 W × 2 s × 0.5 = 10 J
    assert r.energy_j["cpu:0"] == pytest.approx(25.0)
    assert r.energy_j["ram"] == pytest.approx(2.0 * 0.5 * 2.0)
    assert set(m.domains.values()) == {Method.ESTIMATED}
    assert MeterInfo.of(m).is_estimated
    assert "estimate" in m.name and "ESTIMATE" in m.description


def test_system_scope_takes_all_idle_power():
    m, clock, cpu, _ = make("system", cpu_tdp_w=80.0, cpu_threads=8, cpu_idle_w=10.0)
    clock.value, cpu.value = 1.0, 4.0
    assert m.read().energy_j["cpu:0"] == pytest.approx(4.0 * 10.0 + 10.0)


def test_same_inputs_same_numbers():
    readings = []
    for _ in range(2):
        m, clock, cpu, system = make(cpu_tdp_w=65.0)
        for i in range(1, 6):
            clock.value, cpu.value, system.value = i * 0.5, i * 0.3, i * 0.9
            r = m.read()
        readings.append(r.energy_j)
    assert readings[0] == readings[1]


def test_defaults_and_parameters_are_reported():
    m, *_ = make()
    p = m.parameters()
    assert p["cpu_tdp_source"].startswith("default")
    assert p["active_w_per_thread"] == pytest.approx(4.0)
    assert p["ram_w_per_gb"] == DEFAULT_RAM_W_PER_GB
    assert "CodeCarbon" in p["ram_source"] and p["estimate"] is True


def test_cpu_table_uses_package_threads_not_visible_threads():
    spec = lookup_cpu("AMD EPYC 7763 64-Core Processor")
    assert spec is not None
    m = EstimateMeter(
        model="AMD EPYC 7763 64-Core Processor",
        visible_threads=2,
        cpu_times=Source(),
        system_cpu_times=Source(),
        memory_gb=lambda: 0.0,
    )
    assert m.active_w_per_thread == pytest.approx(280 / 128)
    assert m.cpu_idle_w == pytest.approx(0.1 * 280 * 2 / 128)


def test_cpu_time_going_back_does_not_produce_negative_energy():
    m, clock, cpu, system = make(cpu_tdp_w=80.0, cpu_threads=8)
    clock.value, cpu.value, system.value = 1.0, 2.0, 2.0
    first = m.read().energy_j["cpu:0"]
    clock.value, cpu.value = 2.0, 1.0  # a reaped child vanished from the tree for a moment
    assert m.read().energy_j["cpu:0"] >= first


def test_bad_parameters():
    with pytest.raises(ConfigError, match="scope"):
        EstimateMeter(scope="node")
    with pytest.raises(ConfigError, match="--cpu-tdp-w"):
        EstimateMeter(cpu_tdp_w=-5)


def test_real_sources_work():
    m = EstimateMeter()
    deadline = time.monotonic() + 0.3  # enough CPU time to pass the clock tick on a loaded box
    while time.monotonic() < deadline:
        sum(i * i for i in range(20_000))
    r = m.read()
    assert r.energy_j["cpu:0"] > 0 and r.energy_j["ram"] > 0
