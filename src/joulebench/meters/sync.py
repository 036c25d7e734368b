"""Device synchronization at window edges: a window must not close while kernels still run."""

from __future__ import annotations

import sys
from collections.abc import Callable

SyncFn = Callable[[], None]


def no_sync() -> None:
    """For work that runs entirely on the host."""


def torch_sync() -> None:
    """Synchronize every initialized accelerator torch knows about; a no-op without torch.

    torch is never imported here: if the measured code did not import it, nothing ran on a device.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available() and cuda.is_initialized():
        cuda.synchronize()
    mps = getattr(torch, "mps", None)
    backends = getattr(torch, "backends", None)
    if mps is not None and backends is not None and backends.mps.is_available():
        mps.synchronize()


default_sync: SyncFn = torch_sync
