"""Device synchronization at window edges: a window must not close while kernels still run.

``torch.cuda.synchronize()`` waits for the *current* device only. A model split over several GPUs
(``device_map``, tensor parallel) keeps the others running past the window's edge, so every edge
here synchronizes every CUDA device this process has a context on (creating none), or exactly the
devices given to :func:`device_sync`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from joulebench.meters.gpus import cuda_ordinals

log = logging.getLogger(__name__)

SyncFn = Callable[[], None]


def no_sync() -> None:
    """For work that runs entirely on the host."""


def _torch() -> Any:
    """torch if the measured code imported it (never imported here: no torch, no device work)."""
    return sys.modules.get("torch")


def cuda_devices_in_use(torch: Any) -> list[int]:
    """CUDA ordinals with a context in this process (``[]`` before CUDA is initialised)."""
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_available() or not cuda.is_initialized():
        return []
    has_context = getattr(getattr(torch, "_C", None), "_cuda_hasPrimaryContext", None)
    out = []
    for index in range(cuda.device_count()):
        if has_context is not None:
            used = bool(has_context(index))
        else:  # older torch: devices holding memory, and the current one
            used = cuda.memory_allocated(index) > 0 or index == cuda.current_device()
        if used:
            out.append(index)
    return out


def torch_sync() -> None:
    """Synchronize every CUDA device this process uses, and MPS; a no-op without torch."""
    torch = _torch()
    if torch is None:
        return
    for index in cuda_devices_in_use(torch):
        torch.cuda.synchronize(index)
    mps = getattr(torch, "mps", None)
    backends = getattr(torch, "backends", None)
    if mps is not None and backends is not None and backends.mps.is_available():
        mps.synchronize()


def device_sync(devices: Iterable[Any]) -> SyncFn:
    """A sync function for exactly ``devices`` (torch devices or ``"cuda:K"``; others ignored)."""
    ordinals = cuda_ordinals(devices)

    def sync() -> None:
        torch = _torch()
        if torch is None or not ordinals:
            return
        for index in ordinals:
            torch.cuda.synchronize(index)

    return sync


default_sync: SyncFn = torch_sync
