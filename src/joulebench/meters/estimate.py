"""Sensorless energy *estimate* for machines without energy sensors. Label ``estimated`` always.

Model (every constant is returned by :meth:`EstimateMeter.parameters` and can be overridden):

- CPU active energy = Δ CPU time (s) × per-thread active power, where per-thread power =
  package TDP ÷ hardware threads of that package. TDP and thread count come from a small table of
  CPU model names; unknown CPUs use CodeCarbon 3.x's fallback of 4 W per thread.
- CPU idle share = idle package power × wall time × share. Idle package power defaults to 10 % of
  TDP (CodeCarbon's floor for its CPU load model) scaled to the visible threads. ``scope="process"``
  takes this process tree's share of the busy CPU time over the interval; ``scope="system"`` takes
  the whole idle power.
- RAM = GB × W/GB × wall time, with 0.375 W/GB (CodeCarbon ≤ 2.x heuristic: 3 W per 8 GB).
  ``scope="process"``: the process tree's resident memory, sampled at each read; ``"system"``:
  total installed RAM.

CPU time for ``scope="process"`` is the process tree's (this process, its live descendants and
the reaped ones), so a child command started by ``joulebench measure`` is counted while it runs.

``scope="system"`` (``load --url``: the server is not our child) counts the *measured* processes:
this process tree, ``target_pids``' trees and the processes listening on ``target_ports`` (the
server behind a local URL). Every other process's busy CPU time is *other processes'*: it is not
in the reading, its seconds and the energy the model would give it are kept apart
(:meth:`EstimateMeter.other_processes`, ``parameters()["other_processes"]``), and the method
label says so. A port no local process listens on is refused: the estimator can only estimate
this machine. The numbers are model outputs, never measurements; every result says so.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joulebench.errors import ConfigError
from joulebench.meters.base import Availability, Method, Reading

log = logging.getLogger(__name__)

#: CodeCarbon 3.x fallback when a CPU is not in its table (``DEFAULT_POWER_PER_CORE``).
DEFAULT_W_PER_THREAD = 4.0
#: CodeCarbon ≤ 2.x RAM heuristic: 3 W per 8 GB.
DEFAULT_RAM_W_PER_GB = 3.0 / 8.0
#: CodeCarbon's CPU load model never goes below 10 % of TDP: our idle package power.
DEFAULT_IDLE_FRACTION = 0.10
#: Linux CPU accounting resolution (USER_HZ = 100).
UPDATE_PERIOD_S = 0.01


@dataclass(frozen=True, slots=True)
class CpuSpec:
    """A CPU model's thermal design power and hardware threads per package (vendor datasheets)."""

    tdp_w: float
    threads: int


#: Substring of the CPU model name (lower case) → spec. Vendor datasheet values.
CPU_TABLE: dict[str, CpuSpec] = {
    "epyc 9654": CpuSpec(360, 192),
    "epyc 9554": CpuSpec(360, 128),
    "epyc 7763": CpuSpec(280, 128),
    "epyc 7742": CpuSpec(225, 128),
    "epyc 7543": CpuSpec(225, 64),
    "epyc 7r13": CpuSpec(225, 96),
    "xeon platinum 8480": CpuSpec(350, 112),
    "xeon platinum 8468": CpuSpec(350, 96),
    "xeon platinum 8380": CpuSpec(270, 80),
    "xeon platinum 8275cl": CpuSpec(240, 48),
    "xeon gold 6348": CpuSpec(235, 56),
    "xeon gold 6248": CpuSpec(150, 40),
    "core(tm) i9-13900k": CpuSpec(125, 32),
    "core(tm) i7-12700": CpuSpec(65, 20),
    "apple m2": CpuSpec(20, 8),
}


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def lookup_cpu(model: str) -> CpuSpec | None:
    key = model.lower()
    return next((spec for name, spec in CPU_TABLE.items() if name in key), None)


def _psutil():  # type: ignore[no-untyped-def]
    import psutil

    return psutil


class ProcessTree:
    """CPU time and resident memory of a process and its descendants, cheap enough for 10 Hz.

    Listing descendants scans every process on the machine, so the list is refreshed at most
    every ``refresh_s``; CPU time is cumulative, so a child found late loses no energy (its time
    shows up at the next refresh), and reaped children's time is in the parent's counters.
    """

    def __init__(self, pid: int | None = None, refresh_s: float = 1.0) -> None:
        psutil = _psutil()
        self._errors = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
        self.root = psutil.Process(pid)
        self._refresh_s = refresh_s
        self._children: list[Any] = []
        self._listed_at = float("-inf")

    def _descendants(self) -> list[Any]:
        now = time.monotonic()
        if now - self._listed_at >= self._refresh_s:
            try:
                self._children = self.root.children(recursive=True)
            except self._errors:
                self._children = []
            self._listed_at = now
        return self._children

    def cpu_s(self) -> float:
        """User + system seconds of the tree (reaped children included via the parents)."""
        t = self.root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self._descendants():
            try:
                c = child.cpu_times()
            except self._errors:
                continue
            total += c.user + c.system + c.children_user + c.children_system
        return float(total)

    def rss_gb(self) -> float:
        rss = self.root.memory_info().rss
        for child in self._descendants():
            try:
                rss += child.memory_info().rss
            except self._errors:
                continue
        return rss / 1e9


def system_busy_cpu_s() -> float:
    """Busy CPU seconds of the whole machine (all cores, everything but idle and iowait)."""
    t = _psutil().cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _listening_pids(ports: Sequence[int]) -> list[int]:
    """The processes listening on ``ports`` on this machine; a port nobody serves is refused."""
    if not ports:
        return []
    try:
        conns = _psutil().net_connections(kind="tcp")
    except _psutil().AccessDenied as exc:
        raise ConfigError(
            f"cannot list this machine's sockets to find the server on port(s) {list(ports)} "
            f"({exc}): give the server's pid to the estimator, or use a sensor meter"
        ) from None
    pids: dict[int, None] = {}
    for port in ports:
        found = [
            c.pid
            for c in conns
            if c.status == "LISTEN" and c.laddr and c.laddr.port == port and c.pid is not None
        ]
        if not found:
            raise ConfigError(
                f"estimator scope 'system': no process on this machine listens on port {port}. "
                "The estimator only estimates this machine; for a remote server use "
                "--meter prometheus (DCGM exporter) or a meter on that machine"
            )
        pids.update(dict.fromkeys(found))
    return list(pids)


def system_ram_gb() -> float:
    return _psutil().virtual_memory().total / 1e9


def probe() -> Availability:
    return Availability(True, "sensorless model (always available; numbers are estimates)")


class EstimateMeter:
    """CPU and RAM energy *estimated* from CPU time, memory size and published power constants."""

    description = (
        "ESTIMATE without sensors: CPU time × per-thread TDP share + idle share; RAM by GB"
    )

    def __init__(
        self,
        *,
        scope: str = "process",
        cpu_tdp_w: float | None = None,
        cpu_threads: int | None = None,
        cpu_idle_w: float | None = None,
        ram_w_per_gb: float | None = None,
        ram_gb: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_times: Callable[[], float] | None = None,
        system_cpu_times: Callable[[], float] | None = None,
        memory_gb: Callable[[], float] | None = None,
        model: str | None = None,
        visible_threads: int | None = None,
        name: str = "estimate",
        target_pids: Sequence[int] = (),
        target_ports: Sequence[int] = (),
    ) -> None:
        if scope not in ("process", "system"):
            raise ConfigError(f"estimator scope must be 'process' or 'system', got {scope!r}")
        for label, value in (
            ("--cpu-tdp-w", cpu_tdp_w),
            ("--cpu-idle-w", cpu_idle_w),
            ("--ram-w-per-gb", ram_w_per_gb),
            ("ram_gb", ram_gb),
        ):
            if value is not None and not value >= 0:
                raise ConfigError(f"{label} must be a non-negative number of watts/GB, got {value}")
        if cpu_threads is not None and cpu_threads < 1:
            raise ConfigError(f"cpu_threads must be at least 1, got {cpu_threads}")
        self.name = name
        self.selection_note = ""
        self.scope = scope
        self._clock = clock
        self.cpu_model = model if model is not None else cpu_model()
        self.visible_threads = visible_threads or os.cpu_count() or 1
        spec = lookup_cpu(self.cpu_model)
        if cpu_tdp_w is not None:
            self.cpu_tdp_w = float(cpu_tdp_w)
            self.cpu_threads = cpu_threads or (spec.threads if spec else self.visible_threads)
            self.tdp_source = "user (--cpu-tdp-w)"
        elif spec is not None:
            self.cpu_tdp_w, self.cpu_threads = float(spec.tdp_w), cpu_threads or spec.threads
            self.tdp_source = "joulebench CPU table (vendor datasheet)"
        else:
            self.cpu_threads = cpu_threads or self.visible_threads
            self.cpu_tdp_w = DEFAULT_W_PER_THREAD * self.cpu_threads
            self.tdp_source = "default: CodeCarbon 3.x fallback, 4 W per thread (CPU not in table)"
        self.active_w_per_thread = self.cpu_tdp_w / self.cpu_threads
        if cpu_idle_w is not None:
            self.cpu_idle_w, self.idle_source = float(cpu_idle_w), "user (--cpu-idle-w)"
        else:
            share = min(1.0, self.visible_threads / self.cpu_threads)
            self.cpu_idle_w = DEFAULT_IDLE_FRACTION * self.cpu_tdp_w * share
            self.idle_source = "10 % of TDP (CodeCarbon load-model floor) × visible thread share"
        if ram_w_per_gb is not None:
            self.ram_w_per_gb, self.ram_source = float(ram_w_per_gb), "user (--ram-w-per-gb)"
        else:
            self.ram_w_per_gb = DEFAULT_RAM_W_PER_GB
            self.ram_source = "CodeCarbon ≤ 2.x heuristic, 3 W per 8 GB"
        tree = (
            ProcessTree()
            if scope == "process" and (cpu_times is None or memory_gb is None)
            else None
        )
        self.target_pids: list[int] = []
        if scope == "system":
            self.target_pids = [*target_pids, *_listening_pids(target_ports)]
            if cpu_times is None:
                from joulebench.meters.host import ProcessTrees

                cpu_times = ProcessTrees([os.getpid(), *self.target_pids]).cpu_s
            self.description = (
                f"{self.description}; system scope: this process tree"
                + (f" + pids {', '.join(map(str, self.target_pids))}" if self.target_pids else "")
                + ", other processes' CPU time subtracted and reported apart"
            )
        self._cpu_times = cpu_times or (tree.cpu_s if tree is not None else system_busy_cpu_s)
        self._system_cpu_times = system_cpu_times or system_busy_cpu_s
        if ram_gb is not None:
            fixed = float(ram_gb)
            self._memory_gb: Callable[[], float] = lambda: fixed
        else:
            self._memory_gb = memory_gb or (tree.rss_gb if tree is not None else system_ram_gb)
        self._t_last = clock()
        self._cpu_last = self._cpu_times()
        self._sys_last = self._system_cpu_times()
        self._other_cpu_s = 0.0  # system scope: busy CPU seconds of processes we do not measure
        self._mem_last = self._memory_gb()
        self._energy = {"cpu:0": 0.0, "ram": 0.0}
        self._lock = threading.Lock()

    @property
    def domains(self) -> Mapping[str, Method]:
        return {"cpu:0": Method.ESTIMATED, "ram": Method.ESTIMATED}

    @property
    def update_period_s(self) -> float:
        return UPDATE_PERIOD_S

    def read(self) -> Reading:
        with self._lock:  # the timeline thread and window edges read concurrently
            return self._read()

    def _read(self) -> Reading:
        now = self._clock()
        cpu = self._cpu_times()
        wall_s = max(0.0, now - self._t_last)
        cpu_s = max(0.0, cpu - self._cpu_last)  # a reaped zombie can dip the tree sum: clamp
        if self.scope == "process":
            system = self._system_cpu_times()
            sys_s = max(0.0, system - self._sys_last)
            share = min(1.0, cpu_s / sys_s) if sys_s > 0 else 0.0
            self._sys_last = max(system, self._sys_last)
        else:  # the machine's idle power is the measured server's; others' CPU time is not
            share = 1.0
            system = self._system_cpu_times()
            sys_s = max(0.0, system - self._sys_last)
            self._other_cpu_s += max(0.0, sys_s - cpu_s)
            self._sys_last = max(system, self._sys_last)
        mem_gb = self._memory_gb()
        self._energy["cpu:0"] += cpu_s * self.active_w_per_thread + self.cpu_idle_w * wall_s * share
        self._energy["ram"] += (mem_gb + self._mem_last) / 2 * self.ram_w_per_gb * wall_s
        self._t_last, self._cpu_last, self._mem_last = now, max(cpu, self._cpu_last), mem_gb
        return Reading(now, dict(self._energy))

    def other_processes(self) -> dict[str, float]:
        """Cumulative busy CPU seconds of unmeasured processes and the energy left out for them."""
        with self._lock:
            cpu_s = self._other_cpu_s
        return {"cpu_s": cpu_s, "energy_j": cpu_s * self.active_w_per_thread}

    def close(self) -> None:
        pass

    def parameters(self) -> dict[str, object]:
        return {
            "estimate": True,
            "scope": self.scope,
            "cpu_model": self.cpu_model,
            "cpu_tdp_w": self.cpu_tdp_w,
            "cpu_tdp_source": self.tdp_source,
            "cpu_threads_per_package": self.cpu_threads,
            "visible_threads": self.visible_threads,
            "active_w_per_thread": self.active_w_per_thread,
            "cpu_idle_w": self.cpu_idle_w,
            "cpu_idle_source": self.idle_source,
            "ram_w_per_gb": self.ram_w_per_gb,
            "ram_source": self.ram_source,
            "update_period_s": UPDATE_PERIOD_S,
            "selection_note": self.selection_note,
            **(
                {
                    "target_pids": list(self.target_pids),
                    "other_processes": {**self.other_processes(), "subtracted": True},
                }
                if self.scope == "system"
                else {}
            ),
        }
