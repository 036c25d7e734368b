"""Meter test fixtures: a stand-in ``pynvml`` module with scripted GPUs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest


class NVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int | None = 1_000_000  # None: counter not supported (pre-Volta)
    power_mw: int = 300_000
    processes: list = field(default_factory=list)
    mig: list[str] = field(default_factory=list)


class FakePynvml:
    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu], *, init_error: str | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialized = 0

    def nvmlInit(self):
        if self.init_error:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self):
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetUUID(self, h):
        return h.uuid.encode()  # old bindings return bytes

    def nvmlDeviceGetName(self, h):
        return h.name

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if h.energy_mj is None:
            raise NVMLError("Not Supported")
        return h.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        return h.power_mw

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=2**30) for p in h.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return []

    def nvmlDeviceGetMigMode(self, h):
        return (1 if h.mig else 0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, h):
        return len(h.mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, k):
        return SimpleNamespace(uuid=h.mig[k])


UUIDS = [
    "GPU-aaaa1111-0000-0000-0000-000000000000",
    "GPU-bbbb2222-0000-0000-0000-000000000000",
    "GPU-cccc3333-0000-0000-0000-000000000000",
]


@pytest.fixture
def fake_pynvml(monkeypatch):
    """A mocked ``pynvml`` with three H100s installed in ``sys.modules``."""
    module = FakePynvml([FakeGpu(u) for u in UUIDS])
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return module


@pytest.fixture
def pynvml_class():
    return FakePynvml
