"""NVML meter against a mocked pynvml: CUDA_VISIBLE_DEVICES mapping, counter, polling, errors."""

from __future__ import annotations

import sys

import pytest

from joulebench.errors import JoulebenchWarning, MeterUnavailable
from joulebench.meters import nvml
from joulebench.meters.base import Method
from joulebench.meters.isolation import GpuNotIsolated, check_gpu_isolation
from joulebench.meters.nvml import NvmlMeter, resolve_visible

UUIDS = [
    "GPU-aaaa1111-0000-0000-0000-000000000000",
    "GPU-bbbb2222-0000-0000-0000-000000000000",
    "GPU-cccc3333-0000-0000-0000-000000000000",
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(fake_pynvml):
    return fake_pynvml


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, [0, 1, 2]),
        ("2,0", [2, 0]),
        ("GPU-cccc3333-0000-0000-0000-000000000000", [2]),
        ("GPU-bbbb", [1]),  # unique prefix
        ("bbbb2222,aaaa", [1, 0]),  # without the GPU- prefix
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


def test_domains_follow_cuda_order_and_read_counter_in_joules(fake):
    clock = Clock()
    m = NvmlMeter(cuda_visible_devices="GPU-cccc,0", clock=clock)
    assert m.domains == {"gpu:0": Method.COUNTER, "gpu:1": Method.COUNTER}
    assert m.parameters()["devices"]["gpu:0"]["nvml_index"] == 2
    fake.gpus[2].energy_mj += 5_000  # 5 J on the GPU CUDA calls cuda:0
    fake.gpus[0].energy_mj += 250
    clock.now = 1.0
    r = m.read()
    assert r.energy_j == {"gpu:0": pytest.approx(5.0), "gpu:1": pytest.approx(0.25)}
    fake.gpus[2].energy_mj = 1_000  # driver reload: counter reset
    assert m.read().energy_j["gpu:0"] == pytest.approx(6.0)
    m.close()
    assert fake.initialized == 0


def test_env_var_is_honoured(fake, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    m = NvmlMeter()
    assert [d.uuid for d in m.devices] == [UUIDS[1]]
    m.close()


def test_falls_back_to_polling_without_counter(fake):
    fake.gpus[0].energy_mj = None
    clock = Clock()
    m = NvmlMeter(cuda_visible_devices="0", clock=clock, poll_hz=10)
    assert m.domains == {"gpu:0": Method.POLLED}
    clock.now = 2.0
    fake.gpus[0].power_mw = 100_000
    r = m.read()
    assert r.energy_j["gpu:0"] == pytest.approx(2.0 * (300 + 100) / 2)  # trapezoid
    m.close()


def test_counter_mode_refuses_gpus_without_counter(fake):
    fake.gpus[0].energy_mj = None
    with pytest.raises(MeterUnavailable, match=r"Volta or newer.*polled"):
        NvmlMeter(mode="counter", cuda_visible_devices="0")
    assert fake.initialized == 0


def test_polled_mode_forces_polling(fake):
    m = NvmlMeter(mode="polled", cuda_visible_devices="0")
    assert m.domains == {"gpu:0": Method.POLLED}
    m.close()


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


def test_no_visible_gpu_is_unavailable(fake):
    with pytest.raises(MeterUnavailable, match="no GPU is visible"):
        NvmlMeter(cuda_visible_devices="")


def test_mig_instance_measures_parent_with_warning(fake):
    fake.gpus[1].mig = ["MIG-1234abcd-0000"]
    with pytest.warns(JoulebenchWarning, match=r"MIG instance.*whole parent GPU"):
        m = NvmlMeter(cuda_visible_devices="MIG-1234abcd")
    assert m.devices[0].nvml_index == 1
    m.close()


def test_isolation_warns_or_fails_on_foreign_process(fake):
    m = NvmlMeter(cuda_visible_devices="0")
    assert check_gpu_isolation(m) == []
    fake.gpus[0].processes = [4242]
    with pytest.warns(JoulebenchWarning, match="pid 4242 on gpu:0"):
        found = check_gpu_isolation(m)
    assert found[0].pid == 4242
    with pytest.raises(GpuNotIsolated, match="pid 4242"):
        check_gpu_isolation(m, require_isolated=True)
    assert check_gpu_isolation(m, allowed_pids=[4242]) == []
    fake.gpus[1].processes = [777]  # not measured: ignored
    assert check_gpu_isolation(m, allowed_pids=[4242]) == []
    m.close()


def test_list_gpus_for_env(fake):
    gpus = nvml.list_gpus()
    assert gpus[0] == {
        "nvml_index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": UUIDS[0],
        "driver": "550.54.15",
    }
