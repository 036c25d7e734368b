"""Window edges synchronize every device the work uses, not only the current one."""

from __future__ import annotations

import sys
import types

import pytest

from joulebench.meters import sync


class FakeCuda:
    """Four GPUs; the process has contexts on 0 and 2 (a model split over two GPUs)."""

    def __init__(self, contexts=(0, 2), current=0):
        self.contexts, self.current, self.synced = set(contexts), current, []

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def device_count(self):
        return 4

    def current_device(self):
        return self.current

    def memory_allocated(self, i):
        return 2**20 if i in self.contexts else 0

    def synchronize(self, device=None):
        self.synced.append(self.current if device is None else device)


@pytest.fixture
def fake_torch(monkeypatch):
    cuda = FakeCuda()
    torch = types.SimpleNamespace(
        cuda=cuda,
        _C=types.SimpleNamespace(_cuda_hasPrimaryContext=lambda i: i in cuda.contexts),
        backends=types.SimpleNamespace(mps=types.SimpleNamespace(is_available=lambda: False)),
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    return torch


def test_default_sync_waits_for_every_device_with_a_context(fake_torch):
    sync.torch_sync()
    assert fake_torch.cuda.synced == [0, 2]


def test_without_context_query_devices_holding_memory_are_synced(fake_torch):
    del fake_torch._C._cuda_hasPrimaryContext
    fake_torch.cuda.current = 3
    sync.torch_sync()
    assert fake_torch.cuda.synced == [0, 2, 3]


def test_device_sync_waits_for_exactly_the_given_devices(fake_torch):
    sync.device_sync(["cuda:3", "cpu", "cuda:1"])()
    assert fake_torch.cuda.synced == [1, 3]


def test_no_torch_no_sync(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    sync.torch_sync()  # nothing ran on a device: nothing to wait for
    sync.device_sync(["cuda:0"])()
