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


def test_system_scope_reports_other_processes_apart_and_leaves_them_out():
    m, clock, cpu, system = make("system", cpu_tdp_w=80.0, cpu_threads=8, cpu_idle_w=10.0)
    clock.value, cpu.value, system.value = 1.0, 1.0, 3.0  # 2 of 3 busy CPU-seconds are others'
    r = m.read()
    assert r.energy_j["cpu:0"] == pytest.approx(1.0 * 10.0 + 10.0)  # ours + the idle power
    assert m.other_processes() == {"cpu_s": pytest.approx(2.0), "energy_j": pytest.approx(20.0)}
    params = m.parameters()
    assert params["other_processes"]["subtracted"] is True
    assert "other processes' CPU time subtracted" in m.description
    assert "other_processes" not in make()[0].parameters()  # process scope: not applicable


def test_system_scope_leaves_a_real_busy_neighbour_out():
    from joulebench.meters.neighbour import spin_neighbour

    proc = spin_neighbour(3.0)
    try:
        m = EstimateMeter(scope="system", cpu_tdp_w=80.0, cpu_threads=8, cpu_idle_w=0.0, ram_gb=0)
        r0 = m.read()
        time.sleep(1.0)
        r1 = m.read()
    finally:
        proc.kill()
    # the neighbour spun ~1 core (10 J at 10 W per thread): it is reported, not in the reading
    assert r1.energy_j["cpu:0"] - r0.energy_j["cpu:0"] < 0.5 * 10.0
    assert m.other_processes()["cpu_s"] > 0.5


def test_system_scope_measures_the_server_on_a_port_and_refuses_a_port_nobody_serves():
    import os
    import socket

    from joulebench.meters.neighbour import spin_neighbour

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        m = EstimateMeter(scope="system", target_ports=[port], ram_gb=0)
        assert m.target_pids == [os.getpid()] and f"pids {os.getpid()}" in m.description
    with pytest.raises(ConfigError, match=f"no process on this machine listens on port {port}"):
        EstimateMeter(scope="system", target_ports=[port])
    proc = spin_neighbour(3.0)  # a server under load, not our child: given by pid, it is measured
    try:
        m = EstimateMeter(
            scope="system", target_pids=[proc.pid], cpu_tdp_w=80.0, cpu_threads=8,
            cpu_idle_w=0.0, ram_gb=0,
        )  # fmt: skip
        r0 = m.read()
        time.sleep(1.0)
        r1 = m.read()
    finally:
        proc.kill()
    # measured: its CPU time is in the reading (≥ 0.1 core even on a shared machine)
    assert r1.energy_j["cpu:0"] - r0.energy_j["cpu:0"] > 0.1 * 10.0


def test_load_url_plumbing_refuses_a_server_that_is_not_on_this_machine():
    import socket

    from joulebench.cli.meter_options import url_port
    from joulebench.meters.registry import open_meter

    assert url_port("http://10.0.0.7:8080/v1") == 8080 and url_port("https://h/v1") == 443
    with socket.socket() as s:  # a free port: nothing listens on it once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="only estimates this machine"):
        open_meter("estimate", estimate_scope="system", estimate_target_ports=[port])


def test_a_url_load_states_what_other_processes_contributed():
    from urllib.parse import urlsplit

    from joulebench.load.runner import run_load
    from joulebench.load.stub import StubConfig, stub_server
    from joulebench.meters.neighbour import spin_neighbour

    proc = spin_neighbour(4.0)
    try:
        with stub_server(StubConfig(tokens=5, token_delay_s=0.05)) as url:
            port = urlsplit(url).port
            assert port is not None
            m = EstimateMeter(scope="system", target_ports=[port], ram_gb=0)
            result = run_load(
                url, "openai-chat", "sequential", ["hi"], n=4, output_length=5, meter=m,
                clock=time.monotonic,
            )  # fmt: skip
    finally:
        proc.kill()
    others = result.config["other_processes_subtracted"]
    assert others["cpu_s"] > 0.3 and others["energy_j"] > 0  # the neighbour, left out and stated
