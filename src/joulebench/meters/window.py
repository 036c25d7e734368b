"""Energy windows: read a meter at both edges of some work, synchronized, and audit the span.

A window shorter than the meter's update period cannot be trusted (the counter may not have
moved): it is reported as *too short*, never as a number. Profilers extend such work by
repetition inside the window instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from joulebench.errors import MeterUnavailable
from joulebench.meters.base import Meter, MeterInfo, Reading
from joulebench.meters.sync import SyncFn, default_sync

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IdleBaseline:
    """Idle power per domain, measured with the workload loaded but not running."""

    power_w: Mapping[str, float]
    duration_s: float
    methods: Mapping[str, str] = field(default_factory=dict)
    host: Mapping[str, object] | None = None  # other processes' use during it (meters.host)

    @property
    def total_power_w(self) -> float:
        return float(sum(self.power_w.values()))

    def to_dict(self) -> dict[str, object]:
        return {
            "power_w": dict(self.power_w),
            "total_power_w": self.total_power_w,
            "duration_s": self.duration_s,
            "methods": dict(self.methods),
            **({} if self.host is None else {"host": dict(self.host)}),
        }


def measure_idle(
    meter: Meter,
    duration_s: float,
    *,
    sync: SyncFn = default_sync,
    sleep: Callable[[float], None] = time.sleep,
) -> IdleBaseline:
    """Measure idle power over ``duration_s`` (at least one update period)."""
    span = max(duration_s, meter.update_period_s * 2)
    sync()
    r0 = meter.read()
    sleep(span)
    sync()
    r1 = meter.read()
    dt = r1.timestamp_s - r0.timestamp_s
    if dt <= 0:
        raise MeterUnavailable(
            f"meter {meter.name!r}: its clock did not advance during the {span:g} s idle baseline"
        )
    power = {d: (r1.energy_j[d] - r0.energy_j.get(d, 0.0)) / dt for d in r1.energy_j}
    return IdleBaseline(power, dt, {d: str(m) for d, m in meter.domains.items()})


@dataclass(frozen=True, slots=True)
class DomainEnergy:
    """One domain's energy over a window and how it was obtained (``counter``,
    ``estimated``…)."""

    name: str
    energy_j: float
    method: str


@dataclass(frozen=True, slots=True)
class WindowResult:
    """Energy of one window. ``energy_j`` is ``None`` when the window was too short to trust."""

    start_s: float
    end_s: float
    domains: tuple[DomainEnergy, ...]
    meter: MeterInfo
    idle: IdleBaseline | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def too_short(self) -> bool:
        return self.duration_s < self.meter.update_period_s

    @property
    def gross_energy_j(self) -> float:
        """Energy over the window regardless of its length (for internal aggregation only)."""
        return float(sum(d.energy_j for d in self.domains))

    @property
    def energy_j(self) -> float | None:
        return None if self.too_short else self.gross_energy_j

    @property
    def idle_power_w(self) -> float | None:
        return None if self.idle is None else self.idle.total_power_w

    @property
    def net_energy_j(self) -> float | None:
        """Gross minus idle power × duration; ``None`` without an idle baseline or if too short."""
        if self.too_short or self.idle is None:
            return None
        return self.gross_energy_j - self.idle.total_power_w * self.duration_s

    def domain_net_j(self, name: str) -> float | None:
        """One domain's gross energy minus its idle power × duration (``None`` as net_energy_j)."""
        gross = next((d.energy_j for d in self.domains if d.name == name), None)
        if gross is None:
            raise KeyError(f"no domain {name!r} in this window; domains: {self.domain_names}")
        if self.too_short or self.idle is None:
            return None
        return gross - self.idle.power_w.get(name, 0.0) * self.duration_s

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    @property
    def quantization_error_j(self) -> float:
        """± energy the counter's update period leaves uncertain in this window.

        A counter holds the energy up to its last update, so each edge lags the truth by up to one
        update period, in the same direction: the window's energy is within one update quantum
        (average power × update period, per domain) of the truth. Measured periods come from
        :mod:`joulebench.meters.period`. Per op of a window of ``n`` ops it is this ÷ ``n``.
        """
        if self.duration_s <= 0:
            return 0.0
        return float(
            sum(
                abs(d.energy_j) / self.duration_s * self.meter.period_of(d.name)
                for d in self.domains
            )
        )

    @property
    def quantization_error_rel(self) -> float | None:
        """:attr:`quantization_error_j` relative to the window's energy (``None`` if no energy)."""
        gross = self.gross_energy_j
        return None if gross <= 0 else self.quantization_error_j / gross

    @property
    def average_power_w(self) -> float | None:
        return (
            None
            if self.too_short or self.duration_s <= 0
            else self.gross_energy_j / self.duration_s
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "duration_s": self.duration_s,
            "too_short": self.too_short,
            "energy_j": self.energy_j,
            "net_energy_j": self.net_energy_j,
            "idle_power_w": self.idle_power_w,
            "average_power_w": self.average_power_w,
            "quantization_error_j": self.quantization_error_j,
            "domains": [
                {
                    "name": d.name,
                    "energy_j": None if self.too_short else d.energy_j,
                    "net_energy_j": self.domain_net_j(d.name),
                    "method": d.method,
                }
                for d in self.domains
            ],
            "meter": self.meter.to_dict(),
        }


def window_between(
    r0: Reading, r1: Reading, meter_info: MeterInfo, idle: IdleBaseline | None = None
) -> WindowResult:
    """Build a window result from two readings of the same meter."""
    domains = tuple(
        DomainEnergy(d, r1.energy_j[d] - r0.energy_j.get(d, 0.0), meter_info.methods.get(d, "?"))
        for d in sorted(r1.energy_j)
    )
    return WindowResult(r0.timestamp_s, r1.timestamp_s, domains, meter_info, idle)


class EnergyWindow:
    """Context manager measuring the energy of the enclosed work.

    >>> with EnergyWindow(meter, idle=baseline) as w:
    ...     run_work()
    >>> w.result.energy_j  # None if the window was shorter than the meter's update period
    """

    def __init__(
        self, meter: Meter, *, sync: SyncFn = default_sync, idle: IdleBaseline | None = None
    ) -> None:
        self.meter = meter
        self.sync = sync
        self.idle = idle
        self._start: Reading | None = None
        self._result: WindowResult | None = None

    def __enter__(self) -> EnergyWindow:
        self.sync()
        self._start = self.meter.read()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sync()
        end = self.meter.read()
        assert self._start is not None  # __enter__ ran
        self._result = window_between(self._start, end, MeterInfo.of(self.meter), self.idle)
        if self._result.too_short:
            log.warning(
                "window of %.4f s is shorter than meter %s update period %.3f s: no energy reported",
                self._result.duration_s,
                self.meter.name,
                self.meter.update_period_s,
            )

    @property
    def result(self) -> WindowResult:
        if self._result is None:
            raise RuntimeError("the energy window has not closed yet")
        return self._result
