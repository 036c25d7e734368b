"""Meter test fixtures: a stand-in ``pynvml`` module with GPUs that behave like the hardware."""

from __future__ import annotations

import sys

import pytest
from fake_nvml import UUIDS8, FakeClock, FakeGpu, FakePynvml

UUIDS = UUIDS8[:3]


@pytest.fixture
def fake_pynvml(monkeypatch):
    """A mocked ``pynvml`` with three H100s installed in ``sys.modules``."""
    module = FakePynvml([FakeGpu(u) for u in UUIDS], clock=FakeClock())
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return module


@pytest.fixture
def node8(monkeypatch):
    """A mocked ``pynvml`` with eight H100s (GPU i draws 100 + 50·i W) and no CUDA_VISIBLE_DEVICES."""
    module = FakePynvml(
        [FakeGpu(u, power_w=100.0 + 50.0 * i) for i, u in enumerate(UUIDS8)], clock=FakeClock()
    )
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return module


@pytest.fixture
def pynvml_class():
    return FakePynvml
