"""GPU isolation check: another process computing on a measured GPU inflates our energy.

Uses NVML's running compute (and graphics) processes on every GPU an :class:`NvmlMeter` measures
(directly or inside a :class:`CombinedMeter`). Meters without process information (RAPL,
Prometheus, estimates) cannot be checked; that is logged, not hidden.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from joulebench.errors import JoulebenchError, JoulebenchWarning
from joulebench.meters.base import Meter

log = logging.getLogger(__name__)


class GpuNotIsolated(JoulebenchError):
    """Another process uses a measured GPU and isolation was required."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class ForeignProcess:
    domain: str
    pid: int
    used_memory_mb: float | None

    def describe(self) -> str:
        mem = f", {self.used_memory_mb:.0f} MB" if self.used_memory_mb is not None else ""
        return f"pid {self.pid} on {self.domain}{mem}"


def _nvml_meters(meter: Meter) -> list[Meter]:
    from joulebench.meters.combined import CombinedMeter
    from joulebench.meters.nvml import NvmlMeter

    if isinstance(meter, NvmlMeter):
        return [meter]
    if isinstance(meter, CombinedMeter):
        return [m for part in meter.parts for m in _nvml_meters(part)]
    return []


def foreign_gpu_processes(meter: Meter, allowed_pids: Iterable[int] = ()) -> list[ForeignProcess]:
    """Processes other than ours (and ``allowed_pids``) running on the GPUs ``meter`` measures."""
    allowed = {os.getpid(), *allowed_pids}
    found: list[ForeignProcess] = []
    nvml_meters = _nvml_meters(meter)
    if not nvml_meters and any(d.startswith("gpu:") for d in meter.domains):
        log.info("meter %s gives no process information: GPU isolation not checked", meter.name)
    for m in nvml_meters:
        nv = m.pynvml  # type: ignore[attr-defined]
        error = getattr(nv, "NVMLError", Exception)
        for domain, handle in m.handles.items():  # type: ignore[attr-defined]
            procs = []
            for query in (
                "nvmlDeviceGetComputeRunningProcesses",
                "nvmlDeviceGetGraphicsRunningProcesses",
            ):
                fn = getattr(nv, query, None)
                if fn is None:
                    continue
                try:
                    procs.extend(fn(handle))
                except error as exc:
                    log.info("cannot list processes on %s (%s): isolation not checked", domain, exc)
            seen = set()
            for p in procs:
                pid = int(p.pid)
                if pid in allowed or pid in seen:
                    continue
                seen.add(pid)
                mem = getattr(p, "usedGpuMemory", None)
                found.append(ForeignProcess(domain, pid, None if mem is None else mem / 2**20))
    return found


def check_gpu_isolation(
    meter: Meter, *, require_isolated: bool = False, allowed_pids: Iterable[int] = ()
) -> list[ForeignProcess]:
    """Warn (``JoulebenchWarning``) or, with ``require_isolated``, raise when a GPU is shared."""
    found = foreign_gpu_processes(meter, allowed_pids)
    if found:
        text = "other processes use a measured GPU, their energy is included: " + "; ".join(
            f.describe() for f in found
        )
        if require_isolated:
            raise GpuNotIsolated(text + " (stop them or drop --require-isolated-gpu)")
        warnings.warn(text, JoulebenchWarning, stacklevel=2)
    return found
