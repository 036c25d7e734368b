"""NVML meter against a fake pynvml whose GPUs behave like the hardware (see fake_nvml.py).

Every energy is checked against the fake GPU's true power trace, never against the formula the
meter uses; no test races the poller thread (``background=False``, an injected clock).
"""

from __future__ import annotations

import logging
import sys

import pytest
from fake_nvml import UUIDS8, FakeGpu, FakePynvml

from joulebench.errors import ConfigError, JoulebenchWarning, MeterUnavailable
from joulebench.meters import nvml
from joulebench.meters.base import MeterInfo, Method
from joulebench.meters.gpus import GpuSelection
from joulebench.meters.isolation import GpuNotIsolated, check_gpu_isolation
from joulebench.meters.nvml import NvmlMeter, resolve_visible

UUIDS = UUIDS8[:3]


def open_meter(fake: FakePynvml, **kwargs) -> NvmlMeter:
    kwargs.setdefault("background", False)
    return NvmlMeter(clock=fake.clock, sleep=fake.clock.sleep, **kwargs)


def true_energy_j(gpu: FakeGpu, fake: FakePynvml, t0: float, t1: float) -> float:
    return gpu.energy_j(t1 - fake.t0) - gpu.energy_j(t0 - fake.t0)


def measure(meter: NvmlMeter, fake: FakePynvml, seconds: float) -> dict[str, float]:
    r0 = meter.read()
    fake.clock.sleep(seconds)
    r1 = meter.read()
    return {d: r1.energy_j[d] - r0.energy_j[d] for d in r1.energy_j}


# -- which GPUs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, [0, 1, 2]),
        ("2,0", [2, 0]),
        (UUIDS[2], [2]),
        (UUIDS[1][:8], [1]),  # unique prefix
        (f"{UUIDS[1][4:12]},{UUIDS[0][4:8]}", [1, 0]),  # without the GPU- prefix
        ("1,7,0", [1]),  # CUDA stops at the first invalid entry
        ("", []),
        ("GPU-", []),  # ambiguous prefix
    ],
)
def test_cuda_visible_devices_maps_by_uuid(env, expected):
    assert [i for i, _ in resolve_visible(env, UUIDS)] == expected


def test_integer_entries_use_cuda_uuids_when_known():
    cuda_order = [UUIDS[2], UUIDS[0], UUIDS[1]]  # CUDA FASTEST_FIRST differs from PCI order
    assert [i for i, _ in resolve_visible("0,2", UUIDS, cuda_uuids=cuda_order)] == [2, 1]


def test_eight_gpus_without_a_choice_are_all_measured_and_the_first_read_says_so(node8, caplog):
    m = open_meter(node8)
    assert m.selection == GpuSelection.ALL
    assert list(m.domains) == [f"gpu:{i}" for i in range(8)]
    with caplog.at_level(logging.WARNING, logger="joulebench.meters.nvml"):
        m.read()
        m.read()
    loud = [r for r in caplog.records if "measures all 8 GPUs" in r.getMessage()]
    assert len(loud) == 1 and "--gpus" in loud[0].getMessage()
    assert MeterInfo.of(m).parameters["gpu_selection"] == GpuSelection.ALL
    m.close()


def test_cuda_visible_devices_3_5_measures_nvml_gpus_3_and_5(node8, monkeypatch):
    # the study's bug: under CUDA_VISIBLE_DEVICES=3,5 its meter read NVML GPUs 0 and 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    m = open_meter(node8)
    assert m.selection == GpuSelection.VISIBLE
    params = m.parameters()["devices"]
    assert {d: (p["nvml_index"], p["uuid"]) for d, p in params.items()} == {
        "gpu:0": (3, UUIDS8[3]),
        "gpu:1": (5, UUIDS8[5]),
    }
    t0 = node8.clock.now
    got = measure(m, node8, 2.0)
    t1 = node8.clock.now
    for domain, nvml_index in (("gpu:0", 3), ("gpu:1", 5)):
        truth = true_energy_j(node8.gpus[nvml_index], node8, t0, t1)
        assert got[domain] == pytest.approx(truth, rel=0.1)  # ±1 counter quantum per edge
    m.close()


def test_explicit_gpus_by_index_and_uuid(node8):
    m = open_meter(node8, gpus=f"6,{UUIDS8[1][:9]}")
    assert m.selection == GpuSelection.GPUS
    devices = m.parameters()["devices"]
    assert {d: p["nvml_index"] for d, p in devices.items()} == {"gpu:6": 6, "gpu:1": 1}
    assert devices["gpu:6"]["name"] == "NVIDIA H100 80GB HBM3"
    got = measure(m, node8, 1.0)
    assert got["gpu:6"] == pytest.approx(400.0, rel=0.15)  # GPU 6 draws 400 W
    assert got["gpu:1"] == pytest.approx(150.0, rel=0.15)
    m.close()


def test_explicit_gpus_under_cuda_visible_devices_use_its_ordinals(node8, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    m = open_meter(node8, gpus="5")
    assert {d: p["nvml_index"] for d, p in m.parameters()["devices"].items()} == {"gpu:1": 5}
    m.close()
    with pytest.raises(ConfigError, match=r"hides from this process"):
        open_meter(node8, gpus="0")
    assert node8.initialized == 0


@pytest.mark.parametrize("spec", ["8", "GPU-zz", "1,,2", "2,2"])
def test_bad_gpu_choice_says_what_nvml_sees(node8, spec):
    with pytest.raises(ConfigError, match=r"--gpus"):
        open_meter(node8, gpus=spec)
    assert node8.initialized == 0


def test_model_devices_narrow_an_unchosen_meter(node8, caplog):
    import torch

    from joulebench.meters.gpus import require_gpu_domain

    m = open_meter(node8)
    assert require_gpu_domain(m, [torch.device("cuda:2"), torch.device("cpu")]) is m
    assert list(m.domains) == ["gpu:2"] and m.selection == GpuSelection.MODEL
    assert list(m.handles) == ["gpu:2"]
    with caplog.at_level(logging.WARNING):
        got = measure(m, node8, 1.0)
    assert got.keys() == {"gpu:2"} and got["gpu:2"] == pytest.approx(200.0, rel=0.15)
    assert not [r for r in caplog.records if "measures all" in r.getMessage()]
    assert MeterInfo.of(m).parameters["opened_devices"].keys() == {f"gpu:{i}" for i in range(8)}
    m.close()


def test_explicit_gpus_are_kept_when_the_model_uses_fewer(node8):
    import torch

    from joulebench.meters.gpus import require_gpu_domain

    m = open_meter(node8, gpus="0,1,2,3")
    require_gpu_domain(m, [torch.device("cuda:0")])
    assert list(m.domains) == ["gpu:0", "gpu:1", "gpu:2", "gpu:3"]
    m.close()


# -- update period ------------------------------------------------------------------------------


@pytest.mark.parametrize("quantum_s", [0.05, 0.1])
def test_update_period_is_measured_when_the_meter_opens(monkeypatch, quantum_s):
    fake = FakePynvml([FakeGpu(u, quantum_s=quantum_s) for u in UUIDS])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = open_meter(fake, cuda_visible_devices="0,1")
    assert m.update_period_s == pytest.approx(quantum_s, abs=0.0025)  # polled every 2 ms
    period = MeterInfo.of(m).parameters["update_period"]
    assert period["source"] == "measured" and period["probe_s"] < 1.0
    assert MeterInfo.of(m).update_period_s == pytest.approx(quantum_s, abs=0.0025)
    m.close()


def test_slowest_gpu_sets_the_update_period(monkeypatch):
    gpus = [FakeGpu(UUIDS[0], quantum_s=0.05), FakeGpu(UUIDS[1], quantum_s=0.1)]
    fake = FakePynvml(gpus)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = open_meter(fake)
    per = m.parameters()["update_period"]["per_domain_s"]
    assert per["gpu:0"] == pytest.approx(0.05, abs=0.0025)
    assert m.update_period_s == pytest.approx(0.1, abs=0.0025)
    m.close()


def test_a_counter_that_never_moves_falls_back_to_an_assumed_period(monkeypatch, caplog):
    fake = FakePynvml([FakeGpu(UUIDS[0], power_w=0.0)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    start = fake.clock.now
    with caplog.at_level(logging.WARNING):
        m = open_meter(fake)
    assert fake.clock.now - start <= 1.6  # the probe is bounded
    assert m.parameters()["update_period"]["source"] == "assumed"
    assert any("assuming a 100 ms update period" in r.getMessage() for r in caplog.records)
    m.close()


def test_window_quantisation_bound_holds_and_is_not_vacuous(monkeypatch):
    """Windows of 0.33 s at every phase of a 100 ms counter: the measured energy is within the
    window's quantisation error of the true energy, and some phase comes near the bound."""
    from joulebench.meters.window import window_between

    fake = FakePynvml([FakeGpu(UUIDS[0], power_w=250.0, idle_drift_w_per_s=2.0)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = open_meter(fake)
    info = MeterInfo.of(m)
    worst = 0.0
    for _ in range(50):
        fake.clock.sleep(0.0137)  # walk the window start through the counter's phase
        t0 = fake.clock.now
        r0 = m.read()
        fake.clock.sleep(0.33)
        r1 = m.read()
        w = window_between(r0, r1, info)
        error = abs(w.gross_energy_j - true_energy_j(fake.gpus[0], fake, t0, fake.clock.now))
        assert error <= w.quantization_error_j
        worst = max(worst, error / w.quantization_error_j)
    assert worst > 0.5
    m.close()


# -- counter, polled power ----------------------------------------------------------------------


def test_counter_reset_is_accumulated(fake_pynvml):
    m = open_meter(fake_pynvml, cuda_visible_devices="0")
    fake_pynvml.clock.sleep(1.0)
    before = m.read().energy_j["gpu:0"]
    gpu = fake_pynvml.gpus[0]
    gpu.offset_mj = -1000.0 * gpu.energy_j(fake_pynvml.clock.now - fake_pynvml.t0)  # reload
    fake_pynvml.clock.sleep(1.0)
    after = m.read().energy_j["gpu:0"]
    assert 270.0 <= after - before <= 300.0  # counted from zero after the reset, ± a quantum
    m.close()
    assert fake_pynvml.initialized == 0


def step_power(t: float) -> float:
    return 100.0 if t < 5.0 else 400.0


@pytest.mark.parametrize(
    ("has_instant", "label", "within"), [(True, "polled-instant", 0.05), (False, "polled", None)]
)
def test_polling_uses_instantaneous_power_where_the_gpu_has_it(
    monkeypatch, has_instant, label, within
):
    gpu = FakeGpu(UUIDS[0], power_w=step_power, has_counter=False, has_instant=has_instant)
    fake = FakePynvml([gpu])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = open_meter(fake, poll_hz=20)
    assert str(m.domains["gpu:0"]) == label
    fake.clock.now = fake.t0 + 4.95  # a burst starts at 5 s
    m.read()
    t0 = fake.clock.now
    e0 = m.read().energy_j["gpu:0"]
    for _ in range(12):  # 0.6 s read at 20 Hz, as the timeline does
        fake.clock.sleep(0.05)
        e1 = m.read().energy_j["gpu:0"]
    truth = true_energy_j(gpu, fake, t0, fake.clock.now)
    if within is not None:
        assert e1 - e0 == pytest.approx(truth, rel=within)
    else:  # the 1 s average lags the burst: it reads far less than the truth
        assert e1 - e0 < 0.6 * truth
    m.close()


def test_counter_mode_refuses_gpus_without_counter(fake_pynvml):
    fake_pynvml.gpus[0].has_counter = False
    with pytest.raises(MeterUnavailable, match=r"Volta or newer.*polled"):
        open_meter(fake_pynvml, mode="counter", cuda_visible_devices="0")
    assert fake_pynvml.initialized == 0


def test_polled_mode_forces_polling(fake_pynvml):
    m = open_meter(fake_pynvml, mode="polled", cuda_visible_devices="0")
    assert m.domains == {"gpu:0": Method.POLLED_INSTANT}
    m.close()


# -- errors, MIG, isolation, env ----------------------------------------------------------------


def test_init_error_is_translated(monkeypatch, pynvml_class):
    monkeypatch.setitem(sys.modules, "pynvml", pynvml_class([], init_error="Driver Not Loaded"))
    with pytest.raises(MeterUnavailable, match=r"Driver Not Loaded.*joulebench\[gpu\]"):
        NvmlMeter()
    a = nvml.probe()
    assert not a.available and "Driver Not Loaded" in a.reason and "nvidia-smi" in a.hint


def test_missing_module_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    a = nvml.probe()
    assert not a.available and "joulebench[gpu]" in a.hint


def test_no_visible_gpu_is_unavailable(fake_pynvml):
    with pytest.raises(MeterUnavailable, match="no GPU is visible"):
        open_meter(fake_pynvml, cuda_visible_devices="")


def test_mig_instance_measures_parent_with_warning(fake_pynvml):
    fake_pynvml.gpus[1].mig = ["MIG-1234abcd-0000"]
    with pytest.warns(JoulebenchWarning, match=r"MIG instance.*whole parent GPU"):
        m = open_meter(fake_pynvml, cuda_visible_devices="MIG-1234abcd")
    assert m.devices[0].nvml_index == 1
    m.close()


def test_isolation_warns_or_fails_on_foreign_process(fake_pynvml):
    m = open_meter(fake_pynvml, cuda_visible_devices="0")
    assert check_gpu_isolation(m) == []
    fake_pynvml.gpus[0].processes = [4242]
    with pytest.warns(JoulebenchWarning, match="pid 4242 on gpu:0"):
        found = check_gpu_isolation(m)
    assert found[0].pid == 4242
    with pytest.raises(GpuNotIsolated, match="pid 4242"):
        check_gpu_isolation(m, require_isolated=True)
    assert check_gpu_isolation(m, allowed_pids=[4242]) == []
    fake_pynvml.gpus[1].processes = [777]  # not measured: ignored
    assert check_gpu_isolation(m, allowed_pids=[4242]) == []
    m.close()


def test_list_gpus_for_env(fake_pynvml):
    gpus = nvml.list_gpus()
    assert gpus[0] == {
        "nvml_index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": UUIDS[0],
        "driver": "550.54.15",
    }
