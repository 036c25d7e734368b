"""A stand-in ``pynvml`` whose GPUs behave like the hardware, on a clock the test drives.

Each :class:`FakeGpu` has a true power trace ``power_w(t)`` (a constant, an idle drift in W/s,
or any function). What NVML reports is derived from it the way a recent datacenter GPU does:

* the total-energy counter (mJ) holds the exact integral up to the last update instant: it only
  changes every ``quantum_s`` (50 or 100 ms on real GPUs);
* ``nvmlDeviceGetPowerUsage`` is the mean power over the ``average_s`` (1 s) before the last
  update: it lags a power step by about a second;
* ``NVML_FI_DEV_POWER_INSTANT`` (through ``nvmlDeviceGetFieldValues``) is the power at the last
  update, where ``has_instant``.

Nothing sleeps: :class:`FakeClock` is both the meter's clock and its ``sleep``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_FI_DEV_POWER_INSTANT = 186
NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3


class NVMLError(Exception):
    pass


class FakeClock:
    """A monotonic clock that only moves when slept on (or set)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float | Callable[[float], float] = 300.0
    idle_drift_w_per_s: float = 0.0  # added to a constant power_w: p(t) = power_w + drift × t
    quantum_s: float = 0.1
    average_s: float = 1.0
    has_counter: bool = True  # False: pre-Volta, no total-energy counter
    has_instant: bool = True
    offset_mj: float = 1_000_000.0  # counter value at t = 0 (set lower to simulate a reset)
    processes: list = field(default_factory=list)
    mig: list[str] = field(default_factory=list)

    def power_at(self, t: float) -> float:
        if callable(self.power_w):
            return float(self.power_w(t))
        return self.power_w + self.idle_drift_w_per_s * t

    def energy_j(self, t: float, steps_per_s: int = 2000) -> float:
        """∫₀ᵗ p: exact for constant and drifting power, midpoint rule for a function."""
        if t <= 0:
            return 0.0
        if not callable(self.power_w):
            return self.power_w * t + self.idle_drift_w_per_s * t * t / 2
        n = max(1, math.ceil(t * steps_per_s))
        h = t / n
        return h * math.fsum(self.power_w((i + 0.5) * h) for i in range(n))

    def last_update(self, t: float) -> float:
        return math.floor(t / self.quantum_s + 1e-9) * self.quantum_s


class FakePynvml:
    NVMLError = NVMLError
    NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    NVML_SUCCESS = NVML_SUCCESS

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        clock: FakeClock | None = None,
        init_error: str | None = None,
    ) -> None:
        self.gpus = gpus
        self.clock = clock or FakeClock()
        self.t0 = self.clock.now  # GPU time zero (the driver loaded)
        self.init_error = init_error
        self.initialized = 0

    def _t(self) -> float:
        return self.clock.now - self.t0

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
        if not h.has_counter:
            raise NVMLError("Not Supported")
        return int(h.offset_mj + 1000.0 * h.energy_j(h.last_update(self._t())))

    def nvmlDeviceGetPowerUsage(self, h):
        end = h.last_update(self._t())
        start = max(0.0, end - h.average_s)
        if end <= start:
            return int(1000 * h.power_at(0.0))
        return int(1000 * (h.energy_j(end) - h.energy_j(start)) / (end - start))

    def nvmlDeviceGetFieldValues(self, h, field_ids):
        out = []
        for fid in field_ids:
            ok = fid == NVML_FI_DEV_POWER_INSTANT and h.has_instant
            value = SimpleNamespace(
                uiVal=int(1000 * h.power_at(h.last_update(self._t()))) if ok else 0
            )
            out.append(
                SimpleNamespace(
                    fieldId=fid,
                    nvmlReturn=NVML_SUCCESS if ok else NVML_ERROR_NOT_SUPPORTED,
                    valueType=1,
                    value=value,
                )
            )
        return out

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


def uuid(i: int) -> str:
    return f"GPU-{i}f{i}e{i}d{i}c-1111-2222-3333-44444444444{i}"


UUIDS8 = [uuid(i) for i in range(8)]
