"""What else runs on the host during a window: other processes' CPU time (and GPU processes).

A number taken beside a busy neighbour must say so. :class:`HostMonitor` is read at both edges
of a window, like a meter: the machine's busy CPU seconds (``/proc/stat`` through psutil) minus
those of this process and its children (and of any ``target_pids`` trees, such as a local server
under load) are the *other processes'* CPU seconds; divided by the window's wall time they are
the average number of cores the neighbours used (``other_cores``). On a GPU the foreign processes
on the measured GPUs (:mod:`joulebench.meters.isolation`) are listed at the window's end.

:class:`ContentionPolicy` says what a window above the stated share (default 0.05 cores, 5 % of
one core) does: ``flag`` records it (the ``quiet_host`` audit fails), ``fail`` raises
:class:`HostContention`, ``wait`` waits until the host has been quiet for ``quiet_s`` and re-runs
the window, at most ``max_reruns`` times and ``max_wait_s`` in all, then flags. Clock and sleep are
injected; :func:`watch` is the helper any window loop (profile, idle baseline, load) calls.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from joulebench.errors import JoulebenchError

log = logging.getLogger(__name__)

ContentionMode = Literal["flag", "wait", "fail"]
CONTENTION_MODES: tuple[str, ...] = ("flag", "wait", "fail")
#: Default quiet share: 5 % of one core used by other processes, on average over a window.
DEFAULT_MAX_OTHER_CORES = 0.05
#: Linux CPU-time accounting tick (USER_HZ = 100): the resolution of both CPU-time counters.
CPU_TICK_S = 0.01


class HostContention(JoulebenchError):
    """Other processes used more CPU than allowed during a window and ``--on-contention fail``."""

    exit_code = 3


def system_busy_cpu_s() -> float:
    """Busy CPU seconds of the machine, all cores: user, nice, system, irq, softirq.

    ``guest`` is already inside ``user`` on Linux, and ``steal`` is time the hypervisor gave to
    another machine, not to a process of this one: neither is added.
    """
    import psutil

    t = psutil.cpu_times()
    return float(
        sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))
    )


class ProcessTrees:
    """CPU seconds of several process trees (ours and the targets'), listed afresh at each read."""

    def __init__(self, pids: Iterable[int]) -> None:
        from joulebench.meters.estimate import ProcessTree

        self.trees = []
        for pid in dict.fromkeys(pids):
            try:
                self.trees.append(ProcessTree(pid, refresh_s=0.0))
            except Exception as exc:  # psutil.NoSuchProcess / AccessDenied: say, do not hide
                log.warning("cannot follow process %d (%s): its CPU counts as foreign", pid, exc)

    def cpu_s(self) -> float:
        total = 0.0
        for tree in self.trees:
            try:
                total += tree.cpu_s()
            except Exception as exc:  # the process ended: its last time is lost to "others"
                log.info("process %d no longer readable (%s)", tree.root.pid, exc)
        return total


@dataclass(frozen=True, slots=True)
class HostReading:
    """One look at the host: when (the monitor's clock), the CPU-seconds every core has been
    busy since boot, and those the measured process tree has used."""

    timestamp_s: float
    busy_cpu_s: float
    own_cpu_s: float


@dataclass(frozen=True, slots=True)
class HostWindow:
    """Other processes' use of the host over one window."""

    duration_s: float
    busy_cpu_s: float  # the whole machine
    own_cpu_s: float  # this process tree (+ target trees)
    gpu_processes: tuple[str, ...] = ()

    @property
    def other_cpu_s(self) -> float:
        # the two counters tick apart (USER_HZ): a small negative difference is zero
        return max(0.0, self.busy_cpu_s - self.own_cpu_s)

    @property
    def other_cores(self) -> float:
        """Average cores used by other processes (0.05 = 5 % of one core)."""
        return self.other_cpu_s / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def resolution_cores(self) -> float:
        """± cores the CPU-time counters cannot resolve over this window (one tick each of the
        machine's and our counters, ``CPU_TICK_S``): over 0.3 s one tick alone is 0.033 cores."""
        return 2 * CPU_TICK_S / self.duration_s if self.duration_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "other_cpu_s": self.other_cpu_s,
            "other_cores": self.other_cores,
            "resolution_cores": self.resolution_cores,
            "own_cpu_s": self.own_cpu_s,
            "busy_cpu_s": self.busy_cpu_s,
            "gpu_processes": list(self.gpu_processes),
        }


class HostMonitor:
    """Reads the host's busy CPU time and ours; :meth:`between` gives a :class:`HostWindow`.

    ``busy_cpu_s``/``own_cpu_s`` are injectable sources (cumulative seconds) for tests; by default
    psutil's system times and this process tree plus ``target_pids``' trees. ``gpu_meter``: a meter
    whose NVML GPUs are checked for foreign processes at each window's end.
    """

    def __init__(
        self,
        *,
        busy_cpu_s: Callable[[], float] | None = None,
        own_cpu_s: Callable[[], float] | None = None,
        target_pids: Sequence[int] = (),
        gpu_meter: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._busy = busy_cpu_s or system_busy_cpu_s
        if own_cpu_s is None:
            own_cpu_s = ProcessTrees([os.getpid(), *target_pids]).cpu_s
        self._own = own_cpu_s
        self._clock = clock
        self._gpu_meter = gpu_meter

    def read(self) -> HostReading:
        own = self._own()  # ours first: the busy counter then includes all of it
        return HostReading(self._clock(), self._busy(), own)

    def gpu_processes(self) -> tuple[str, ...]:
        if self._gpu_meter is None:
            return ()
        from joulebench.meters.isolation import foreign_gpu_processes

        return tuple(p.describe() for p in foreign_gpu_processes(self._gpu_meter))

    def between(self, r0: HostReading, r1: HostReading) -> HostWindow:
        return HostWindow(
            r1.timestamp_s - r0.timestamp_s,
            r1.busy_cpu_s - r0.busy_cpu_s,
            r1.own_cpu_s - r0.own_cpu_s,
            self.gpu_processes(),
        )


class ContentionPolicy(BaseModel):
    """What a window beside a busy neighbour does (``--on-contention`` and its parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ContentionMode = "flag"
    max_other_cores: float = Field(
        default=DEFAULT_MAX_OTHER_CORES,
        ge=0,
        description="quiet share: cores other processes may use",
    )
    quiet_s: float = Field(default=3.0, gt=0, description="wait: seconds the host must stay quiet")
    max_reruns: int = Field(default=3, ge=0, description="wait: re-runs of busy windows, then flag")
    max_wait_s: float = Field(
        default=120.0, ge=0, description="wait: total seconds waited, then flag"
    )
    poll_s: float = Field(
        default=0.5, gt=0, description="wait: the quiet probe's sampling interval"
    )

    def busy(self, w: HostWindow) -> bool:
        """Above the share by more than the counters' resolution, or a foreign GPU process."""
        return w.other_cores - w.resolution_cores > self.max_other_cores or bool(w.gpu_processes)


@dataclass(slots=True)
class ContentionLog:
    """Re-runs and waits of one measurement (all windows of a phase, or an idle baseline)."""

    reruns: int = 0
    waited_s: float = 0.0
    discarded_other_cores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reruns": self.reruns,
            "waited_s": self.waited_s,
            "discarded_other_cores": list(self.discarded_other_cores),
        }


def describe(w: HostWindow, policy: ContentionPolicy) -> str:
    gpu = f"; foreign GPU processes: {', '.join(w.gpu_processes)}" if w.gpu_processes else ""
    return (
        f"other processes used {w.other_cores:.3f} cores on average over a {w.duration_s:.3g} s "
        f"window (> {policy.max_other_cores:g} allowed){gpu}"
    )


def wait_for_quiet(
    host: HostMonitor,
    policy: ContentionPolicy,
    *,
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, float]:
    """Wait until other processes stayed under the share for ``policy.quiet_s`` (or ``budget_s``).

    Returns (quiet reached, seconds waited). The host is sampled every ``poll_s``; any busy sample
    restarts the quiet span.
    """
    t_start = clock()
    quiet_since = t_start
    prev = host.read()
    while True:
        now = clock()
        if now - quiet_since >= policy.quiet_s:
            return True, now - t_start
        if now - t_start >= budget_s:
            return False, now - t_start
        sleep(policy.poll_s)
        cur = host.read()
        w = host.between(prev, cur)
        prev = cur
        if policy.busy(w):
            quiet_since = clock()


def watch(
    run_window: Callable[[], Any],
    host: HostMonitor,
    policy: ContentionPolicy,
    contention: ContentionLog,
    *,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Any, HostWindow]:
    """Run one window under the policy; returns its result and the host's use during it.

    ``run_window()`` does the measured work and returns its result; it is called again (after a
    quiet wait) when ``wait`` allows a re-run. ``fail`` raises :class:`HostContention`.
    """
    while True:
        h0 = host.read()
        result = run_window()
        h1 = host.read()
        w = host.between(h0, h1)
        if not policy.busy(w):
            return result, w
        text = f"{what}: {describe(w, policy)}"
        if policy.mode == "fail":
            raise HostContention(
                f"{text}; stopped (--on-contention fail). Stop the other work, or use "
                "--on-contention wait or flag"
            )
        budget_s = policy.max_wait_s - contention.waited_s
        if policy.mode == "flag" or contention.reruns >= policy.max_reruns or budget_s <= 0:
            if policy.mode == "wait":
                log.warning("%s; re-run cap reached, window kept and flagged", text)
            return result, w
        log.info("%s; waiting for a quiet host, then re-running the window", text)
        quiet, waited = wait_for_quiet(host, policy, budget_s=budget_s, clock=clock, sleep=sleep)
        contention.waited_s += waited
        if not quiet:
            log.warning("%s; host not quiet within the wait cap, window kept and flagged", text)
            return result, w
        contention.reruns += 1
        contention.discarded_other_cores.append(w.other_cores)


def summarize_host(windows: Sequence[HostWindow | dict[str, Any]]) -> dict[str, Any] | None:
    """Mean and largest other-process share over windows (``None`` when none was watched)."""
    ds = [w.to_dict() if isinstance(w, HostWindow) else w for w in windows]
    if not ds:
        return None
    cores = [float(d["other_cores"]) for d in ds]
    gpu = sorted({p for d in ds for p in d.get("gpu_processes", [])})
    return {
        "windows": len(ds),
        "other_cores_mean": sum(cores) / len(cores),
        "other_cores_max": max(cores),
        "gpu_processes": gpu,
    }
