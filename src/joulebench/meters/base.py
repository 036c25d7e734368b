"""The meter Protocol: cumulative energy per domain, with a monotonic timestamp and a method label.

A *domain* is one thing that draws power: ``gpu:N``, ``cpu:N`` (a CPU package), ``dram:N`` and
``ram``. Every meter reports, per domain, the energy accumulated since the meter was opened
(already corrected for counter wraparound and resets) and *how it knows* (:class:`Method`). Every
number joulebench stores keeps that label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

DOMAIN_PATTERN = re.compile(r"^(gpu|cpu|dram):\d+$|^ram$")


class Method(str, Enum):
    """How a domain's energy is known."""

    COUNTER = "counter"  # hardware energy counter (NVML total energy, DCGM)
    POLLED = "polled"  # integrated power samples (NVML's ~1 s averaged power on recent GPUs)
    POLLED_INSTANT = "polled-instant"  # integrated instantaneous power samples
    RAPL = "rapl"  # Intel/AMD RAPL energy counter through powercap
    ESTIMATED = "estimated"  # a model, no sensor
    REPLAY = "replay"  # recorded trace (tests, re-analysis)
    FAKE = "fake"  # scripted trace (tests)

    def __str__(self) -> str:
        return self.value


#: Methods that come from a physical sensor on this machine.
MEASURED_METHODS = frozenset({Method.COUNTER, Method.POLLED, Method.POLLED_INSTANT, Method.RAPL})


def methods_label(methods: Mapping[str, object] | None, fallback: str | None = None) -> str:
    """One label for a set of per-domain methods: ``estimated``, ``counter+rapl`` (sorted,
    distinct), else ``fallback`` or ``unknown``. Every output that names "the" method uses it."""
    labels = sorted({str(m) for m in (methods or {}).values() if m})
    return "+".join(labels) if labels else fallback or "unknown"


def check_domain(name: str) -> str:
    """Return ``name`` if it is a valid domain name, else raise ValueError."""
    if not DOMAIN_PATTERN.match(name):
        raise ValueError(f"invalid energy domain {name!r}: expected gpu:N, cpu:N, dram:N or ram")
    return name


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative energy per domain since the meter was opened, at a monotonic time."""

    timestamp_s: float
    energy_j: Mapping[str, float]

    def total_j(self) -> float:
        return float(sum(self.energy_j.values()))


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a backend can measure here; if not, why and what to install or enable."""

    available: bool
    reason: str = ""
    hint: str = ""

    def describe(self) -> str:
        if self.available:
            return "available" + (f" ({self.reason})" if self.reason else "")
        text = f"unavailable: {self.reason}"
        return text + (f" — {self.hint}" if self.hint else "")


@runtime_checkable
class Meter(Protocol):
    """An open energy source. ``read()`` must be cheap: it is called at window edges and ≥10 Hz."""

    name: str

    @property
    def domains(self) -> Mapping[str, Method]:
        """Domain name → method label."""
        ...

    @property
    def update_period_s(self) -> float:
        """Shortest interval over which the readings change (the counter's refresh period)."""
        ...

    def read(self) -> Reading: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What a stored result says about the meter that produced it."""

    name: str
    methods: dict[str, str]
    update_period_s: float
    parameters: dict[str, object] = field(default_factory=dict)
    #: Per-domain update period where the parts of a combined meter differ (RAPL ≈ 1 ms beside
    #: NVML's 50–100 ms); a domain not listed has ``update_period_s``.
    domain_periods_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, meter: Meter) -> MeterInfo:
        params = getattr(meter, "parameters", None)
        return cls(
            name=meter.name,
            methods={d: str(m) for d, m in meter.domains.items()},
            update_period_s=float(meter.update_period_s),
            parameters=dict(params() if callable(params) else params or {}),
            domain_periods_s=domain_periods(meter),
        )

    def period_of(self, domain: str) -> float:
        """The update period that applies to ``domain``."""
        return self.domain_periods_s.get(domain, self.update_period_s)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "methods": dict(self.methods),
            "update_period_s": self.update_period_s,
            "parameters": dict(self.parameters),
        }
        if self.domain_periods_s:
            out["domain_periods_s"] = dict(self.domain_periods_s)
        return out

    @property
    def method_label(self) -> str:
        """The meter's methods joined (``estimated``, ``counter+rapl``…), ``unknown`` if none."""
        return methods_label(self.methods)

    @property
    def is_estimated(self) -> bool:
        return any(m == Method.ESTIMATED.value for m in self.methods.values())


def domain_periods(meter: Meter) -> dict[str, float]:
    """Update period per domain, from the parts of a combined meter (``{}`` for a single one)."""
    parts = getattr(meter, "parts", None)
    if not parts:
        return {}
    out: dict[str, float] = {}
    for part in parts:
        inner = domain_periods(part)
        for domain in part.domains:
            out[domain] = inner.get(domain, float(part.update_period_s))
    return out


class CounterAccumulator:
    """Turns a raw, possibly wrapping or resetting hardware counter into a cumulative value.

    ``max_range`` is the value at which the counter wraps to zero (RAPL's
    ``max_energy_range_uj``); ``None`` means it never wraps, so a decrease is a reset (a driver
    reload, an exporter restart): the new raw value is then counted from zero.
    Units are whatever the caller passes; convert once, outside.
    """

    __slots__ = ("_last", "_max_range", "resets", "total", "wraps")

    def __init__(self, first_raw: float, max_range: float | None = None) -> None:
        self._last = float(first_raw)
        self._max_range = max_range
        self.total = 0.0
        self.wraps = 0
        self.resets = 0

    def update(self, raw: float) -> float:
        raw = float(raw)
        delta = raw - self._last
        if delta < 0:
            if self._max_range is not None:
                delta += self._max_range
                self.wraps += 1
            else:
                delta = raw
                self.resets += 1
        self._last = raw
        self.total += delta
        return self.total
