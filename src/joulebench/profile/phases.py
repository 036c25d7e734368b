"""Named phases and the repeated, synchronized measurement window around them.

:class:`RepeatedMeasurement` is what every profiler measurement goes through:

1. warm-ups, each timed alone and reported apart (``warmup=True``, no energy): exactly
   ``warmup`` of them, or (``warmup_settle``) until two in a row took within that share of each
   other, ``warmup`` being then a cap (:class:`WarmupStop` says how many ran and why they
   stopped);
2. repeats: one energy window per repeat, device-synchronized at both edges, in which the
   operation runs as many times as needed for the window to last at least
   ``max(min_window_s, meter.update_period_s)`` — a shorter window is never reported — in
   shrinking chunks (:func:`window_chunk`) so it ends about one op past that target (the
   profiler's default ``min_window_s`` is :func:`auto_window_s` of the meter's update period);
3. the stopping rule (95 % CI half-width of the per-op energy ≤ target, or the cap).

With a :class:`~joulebench.meters.host.HostMonitor`, every window (and the idle baseline,
:func:`measure_idle_watched`) also records other processes' CPU use, and the
:class:`~joulebench.meters.host.ContentionPolicy` flags, waits and re-runs, or fails a window
beside a busy neighbour. Every repeat is kept. ``measure_repeated`` runs one measurement to its
end; ``measure_interleaved`` runs several in rounds, one window of each per round, so that what
the host does meanwhile affects them alike (the profiler measures its phases that way).
``prefill_measurement`` and ``decode_measurement`` build the direct-method phases. How windows
are taken (rule, window length, warm-ups, idle baseline, sync, host watch) is one
:class:`WindowSettings`, shared by a cell's phases.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from joulebench.analysis.stats import StoppingRule, Summary, summarize
from joulebench.errors import at_least
from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.host import (
    ContentionLog,
    ContentionPolicy,
    HostMonitor,
    HostWindow,
    summarize_host,
    watch,
)
from joulebench.meters.sync import SyncFn, default_sync
from joulebench.meters.window import IdleBaseline, measure_idle, window_between
from joulebench.results.cell import DomainMean, WarmupStopRecord

log = logging.getLogger(__name__)


class Phase(str, Enum):
    """What a window measured."""

    PREFILL = "prefill"  # forward over the prompt, producing the first token
    DECODE = "decode"  # token steps from a prepared KV cache
    GENERATE = "generate"  # a full generate (subtraction method, consistency check)

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class RepeatRecord:
    """One warm-up or one measured window (per-op figures = window figures / ``n_ops``)."""

    phase: str
    method: str
    idx: int
    warmup: bool
    n_ops: int
    duration_s: float
    latency_s: float  # device-timed seconds per op
    energy_j: float | None = None  # per op; None for warm-ups and too-short windows
    net_energy_j: float | None = None
    domains: list[dict[str, Any]] = field(default_factory=list)
    host: dict[str, Any] | None = None  # other processes' use of the host (HostWindow.to_dict)

    def to_row(self, tokens: dict[str, int] | None = None) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "method": self.method,
            "idx": self.idx,
            "warmup": self.warmup,
            "n_ops": self.n_ops,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "net_energy_j": self.net_energy_j,
            "tokens": tokens,
            "domains": {
                "latency_s": self.latency_s,
                "per_domain": self.domains,
                **({} if self.host is None else {"host": self.host}),
            },
        }


#: ``--warmup-rule settled``: warm-ups stop once two in a row took within this share of each other.
WARMUP_SETTLE_REL = 0.10
#: Shortest default window, and how many meter update periods a default window spans at least.
AUTO_WINDOW_FLOOR_S = 0.25
AUTO_WINDOW_PERIODS = 10


def auto_window_s(update_period_s: float) -> float:
    """The default window length: ``max(0.25 s, 10 × the meter's update period)``.

    Ten update periods keep one counter tick (the quantisation of a window's energy) at ≤ 10 %
    of a window; NVML's ~100 ms counter gets 1 s windows, RAPL and the estimator 0.25 s. Every
    window still runs whole ops, so an op longer than this makes its own window length.
    """
    return max(AUTO_WINDOW_FLOOR_S, AUTO_WINDOW_PERIODS * float(update_period_s))


def warmups_settled(times_s: Sequence[float], settle_rel: float) -> bool:
    """The last two warm-ups took within ``settle_rel`` of the shorter one."""
    if len(times_s) < 2:
        return False
    a, b = times_s[-2], times_s[-1]
    return abs(a - b) <= settle_rel * min(a, b)


@dataclass(frozen=True, slots=True)
class WarmupStop:
    """How many warm-ups ran and why they stopped (stored with the phase)."""

    rule: str  # "exact" (the configured count) or "settled" (the count is a cap)
    cap: int
    n: int
    reason: str  # "count", "settled" or "cap"
    settle_rel: float | None = None

    def to_dict(self) -> WarmupStopRecord:
        return {
            "rule": self.rule,
            "cap": self.cap,
            "n": self.n,
            "stopped": self.reason,
            "settle_rel": self.settle_rel,
        }


@dataclass(slots=True)
class PhaseMeasurement:
    phase: str
    method: str
    warmups: list[RepeatRecord]
    repeats: list[RepeatRecord]
    converged: bool
    min_window_s: float
    ci_target: float | None = None
    max_repeats: int | None = None
    contention: dict[str, Any] | None = None  # ContentionLog.to_dict() when the host was watched
    warmup_stop: WarmupStop | None = None

    def _values(self, attr: str) -> list[float]:
        return [getattr(r, attr) for r in self.repeats if getattr(r, attr) is not None]

    @property
    def energy(self) -> Summary | None:
        vals = self._values("energy_j")
        return summarize(vals) if vals else None

    @property
    def net_energy(self) -> Summary | None:
        vals = self._values("net_energy_j")
        return summarize(vals) if vals else None

    @property
    def latency(self) -> Summary:
        return summarize([r.latency_s for r in self.repeats])

    @property
    def host(self) -> dict[str, Any] | None:
        """Other processes' share over the repeats (``None`` when the host was not watched)."""
        summary = summarize_host([r.host for r in self.repeats if r.host is not None])
        if summary is not None and self.contention is not None:
            summary.update(self.contention)
        return summary

    @property
    def shortest_window_s(self) -> float:
        return min(r.duration_s for r in self.repeats)

    def per_domain_mean(self) -> list[DomainMean]:
        """Mean per-op energy per domain, each with its method label."""
        acc: dict[str, dict[str, Any]] = {}
        for r in self.repeats:
            for d in r.domains:
                slot = acc.setdefault(
                    d["name"], {"name": d["name"], "method": d["method"], "e": [], "n": []}
                )
                if d["energy_j"] is not None:
                    slot["e"].append(d["energy_j"])
                if d["net_energy_j"] is not None:
                    slot["n"].append(d["net_energy_j"])
        return [
            {
                "name": s["name"],
                "method": s["method"],
                "energy_j": math.fsum(s["e"]) / len(s["e"]) if s["e"] else None,
                "net_energy_j": math.fsum(s["n"]) / len(s["n"]) if s["n"] else None,
            }
            for s in acc.values()
        ]


class DeviceTimer:
    """Seconds between ``start`` and ``stop``: CUDA events on a GPU, synced perf_counter otherwise."""

    def __init__(self, device: Any = None, sync: SyncFn = default_sync) -> None:
        self.sync = sync
        self._cuda = getattr(device, "type", str(device)) == "cuda"
        self._t0 = 0.0
        self._events: tuple[Any, Any] | None = None

    def start(self) -> None:
        if self._cuda:
            import torch

            self._events = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            self._events[0].record()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._cuda and self._events is not None:
            self._events[1].record()
            self._events[1].synchronize()
            return float(self._events[0].elapsed_time(self._events[1])) / 1e3
        self.sync()
        return time.perf_counter() - self._t0


#: Share of the ops still needed that one chunk runs before the clock is checked again.
CHUNK_SHARE = 0.6


def window_chunk(remaining_s: float, op_s: float | None) -> int:
    """How many ops to run before the next clock check, to end a window just past its target.

    Committing to the whole window from one per-op estimate overshoots whenever the ops slow down
    (a shared CPU, a warm-up faster than steady state): windows ran up to 2× their target. So a
    chunk covers ``CHUNK_SHARE`` of the ops still needed, and the last one or two run alone: the
    window ends within about one op of its target. A check is a device sync and a clock read.
    """
    if not op_s or op_s <= 0:
        return 1
    ops_left = remaining_s / op_s
    if ops_left <= 2:
        return max(1, math.ceil(ops_left))
    return max(1, int(ops_left * CHUNK_SHARE))


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSettings:
    """How a measurement takes its windows; a cell's phases share one.

    ``rule``: when to stop; ``min_window_s``: the shortest window (the meter's update period
    raises it); ``warmup``: warm-ups, exactly, or with ``warmup_settle`` at most that many
    until two in a row agree within that share; ``idle``: the baseline that net energy
    subtracts; ``sync``/``device``: the device synchronisation and timer; ``host`` and
    ``contention``: watch other processes during each window and what to do about them;
    ``clock``/``sleep``: injectable for tests.
    """

    rule: StoppingRule
    min_window_s: float
    warmup: int = 5
    warmup_settle: float | None = None
    idle: IdleBaseline | None = None
    sync: SyncFn = default_sync
    device: Any = None
    clock: Callable[[], float] = time.perf_counter
    host: HostMonitor | None = None
    contention: ContentionPolicy | None = None
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        at_least(self.warmup, 0, "warmup", error=ValueError)
        if self.warmup_settle is not None and not self.warmup_settle > 0:
            raise ValueError(
                f"warmup_settle must be > 0 (or None: exact count), got {self.warmup_settle}"
            )


class RepeatedMeasurement:
    """One measured operation: its warm-ups, then one window per :meth:`window` call.

    :func:`measure_repeated` runs one to the end; :func:`measure_interleaved` runs several in
    rounds (one window of each per round), so that a host that slows down or speeds up between
    windows affects every operation alike instead of the one that happened to run then.
    """

    def __init__(
        self,
        op: Callable[[], object],
        meter: Meter,
        settings: WindowSettings,
        *,
        phase: Phase,
        method: str,
    ) -> None:
        self.op = op
        self.meter = meter
        self.settings = settings
        self.phase = phase
        self.method = method
        self.warmup_stop: WarmupStop | None = None
        self.target_s = max(float(settings.min_window_s), float(meter.update_period_s))
        self.info = MeterInfo.of(meter)
        self.timer = DeviceTimer(settings.device, settings.sync)
        self.policy = settings.contention or ContentionPolicy()
        self.log = ContentionLog()
        self.warmups: list[RepeatRecord] = []
        self.repeats: list[RepeatRecord] = []
        self.per_op: list[float] = []
        self.op_s: float | None = None

    def warm_up(self) -> WarmupStop:
        """The warm-ups, each timed alone (reported apart, no energy).

        Exactly ``warmup`` of them, or with ``warmup_settle`` until two in a row took within that
        share of each other (at most ``warmup``): a 1-s decode is warm after two or three, and
        five cost as much as its windows. Returns (and keeps) how many ran and why they stopped.
        """
        settle = self.settings.warmup_settle
        times: list[float] = []
        reason = "count" if settle is None else "cap"
        for i in range(self.settings.warmup):
            self.settings.sync()
            self.timer.start()
            self.op()
            self.op_s = self.timer.stop()
            times.append(self.op_s)
            self.warmups.append(
                RepeatRecord(str(self.phase), self.method, i, True, 1, self.op_s, self.op_s)
            )
            if settle is not None and warmups_settled(times, settle):
                reason = "settled"
                break
        self.warmup_stop = WarmupStop(
            "exact" if settle is None else "settled",
            self.settings.warmup,
            len(times),
            reason,
            settle,
        )
        return self.warmup_stop

    @property
    def done(self) -> bool:
        """The stopping rule is met (CI target after the minimum repeats) or the cap is hit."""
        return (
            self.settings.rule.done(self.per_op)
            or len(self.repeats) >= self.settings.rule.max_repeats
        )

    def _run_window(self) -> tuple[int, float, Any, Any]:
        target_s, op = self.target_s, self.op
        sync, clock = self.settings.sync, self.settings.clock  # looked up once, not per chunk
        k = window_chunk(target_s / 2, self.op_s)  # the warm-up / last window estimate: half
        sync()
        r0 = self.meter.read()
        self.timer.start()
        t0 = clock()
        n = 0
        last = 0.0
        while True:
            for _ in range(k):
                op()
            n += k
            sync()
            elapsed = clock() - t0
            if elapsed >= target_s:
                break
            # the slower of the window's mean and the last chunk: ops that slow down are seen
            k = window_chunk(target_s - elapsed, max(elapsed / n, (elapsed - last) / k))
            last = elapsed
        device_s = self.timer.stop()
        r1 = self.meter.read()
        return n, device_s, r0, r1

    def window(self) -> RepeatRecord:
        """Measure one window (watched under the contention policy) and keep it."""
        phase = self.phase
        hw: HostWindow | None = None
        if self.settings.host is None:
            n, device_s, r0, r1 = self._run_window()
        else:
            what = f"{phase}/{self.method} window {len(self.repeats)}"
            (n, device_s, r0, r1), hw = watch(
                self._run_window,
                self.settings.host,
                self.policy,
                self.log,
                what=what,
                clock=self.settings.clock,
                sleep=self.settings.sleep,
            )
        w = window_between(r0, r1, self.info, self.settings.idle)
        self.op_s = device_s / n
        domains = [
            {
                "name": d.name,
                "method": d.method,
                "energy_j": None if w.too_short else d.energy_j / n,
                "net_energy_j": None if (net := w.domain_net_j(d.name)) is None else net / n,
            }
            for d in w.domains
        ]
        rec = RepeatRecord(
            str(phase),
            self.method,
            len(self.repeats),
            False,
            n,
            w.duration_s,
            self.op_s,
            None if w.energy_j is None else w.energy_j / n,
            None if w.net_energy_j is None else w.net_energy_j / n,
            domains,
            None if hw is None else hw.to_dict(),
        )
        if w.too_short:
            log.warning(
                "%s window of %.4f s is shorter than the meter update period", phase, w.duration_s
            )
        self.repeats.append(rec)
        if rec.energy_j is not None:
            self.per_op.append(rec.energy_j)
        return rec

    def result(self) -> PhaseMeasurement:
        return PhaseMeasurement(
            str(self.phase),
            self.method,
            self.warmups,
            self.repeats,
            self.settings.rule.converged(self.per_op),
            self.target_s,
            self.settings.rule.ci_target,
            self.settings.rule.max_repeats,
            None if self.settings.host is None else self.log.to_dict(),
            self.warmup_stop,
        )


def measure_repeated(
    op: Callable[[], object], meter: Meter, settings: WindowSettings, *, phase: Phase, method: str
) -> PhaseMeasurement:
    """Warm up, then measure ``op`` in windows of ≥ ``settings.min_window_s`` until the rule
    says stop. With ``settings.host``, other processes are watched during each window, under
    ``settings.contention`` (default: flag)."""
    m = RepeatedMeasurement(op, meter, settings, phase=phase, method=method)
    m.warm_up()
    while True:
        m.window()
        if m.done:
            return m.result()


def measure_interleaved(
    measurements: Mapping[str, RepeatedMeasurement],
) -> dict[str, PhaseMeasurement]:
    """Warm every operation up, then measure them in rounds: one window of each per round.

    Every operation gets at least its minimum number of windows side by side with the others,
    so the phases a consistency check compares see the same host; after that an operation that
    has met its stopping rule (or its cap) sits out the later rounds, so a noisy one (direct
    prefill) costs only its own extra windows. Measured one after another (every prefill window,
    then every decode window, …) they differed by whatever the shared host did meanwhile:
    ±10-25 % between runs on a 2-core VM, enough to fail a 5 % check.
    """
    for m in measurements.values():
        m.warm_up()
    items = list(measurements.values())
    r = 0
    while True:
        order = items if r % 2 == 0 else items[::-1]  # no op always runs after the same one
        for m in order:
            if not m.done:
                m.window()
        r += 1
        if all(m.done for m in items):
            return {k: m.result() for k, m in measurements.items()}


def measure_idle_watched(
    meter: Meter,
    duration_s: float,
    *,
    host: HostMonitor | None = None,
    contention: ContentionPolicy | None = None,
    sync: SyncFn = default_sync,
    sleep: Callable[[float], None] = time.sleep,
) -> IdleBaseline:
    """The idle baseline, with other processes' use of the host during it (``host``).

    A baseline beside a busy neighbour is subtracted from every net figure, so it is watched
    like a window: flagged (``IdleBaseline.host``), re-measured after a quiet wait, or refused.
    """
    if host is None:
        return measure_idle(meter, duration_s, sync=sync, sleep=sleep)
    log_ = ContentionLog()
    idle, hw = watch(
        lambda: measure_idle(meter, duration_s, sync=sync, sleep=sleep),
        host,
        contention or ContentionPolicy(),
        log_,
        what="idle baseline",
        sleep=sleep,
    )
    return IdleBaseline(
        idle.power_w, idle.duration_s, idle.methods, host={**hw.to_dict(), **log_.to_dict()}
    )


def _run_all(fn: Callable[[Any], object], items: Sequence[Any]) -> Callable[[], None]:
    def op() -> None:
        for item in items:
            fn(item)

    return op


def prefill_measurement(
    ops: Any, batches: Sequence[Any], meter: Meter, settings: WindowSettings
) -> RepeatedMeasurement:
    """Direct prefill: one op = a forward over every batch of the prompt set (cache discarded)."""
    return RepeatedMeasurement(
        _run_all(ops.prefill, batches), meter, settings, phase=Phase.PREFILL, method="direct"
    )


def decode_measurement(
    ops: Any, states: Sequence[Any], meter: Meter, settings: WindowSettings
) -> RepeatedMeasurement:
    """Direct decode: one op = the decode steps of every batch from its prepared cache."""
    return RepeatedMeasurement(
        _run_all(ops.decode, states), meter, settings, phase=Phase.DECODE, method="direct"
    )
