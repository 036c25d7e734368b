"""A scripted power trace exposed like real hardware: the test double every energy test uses.

:class:`FakeMeter` integrates a power trace (a constant, a constant per domain, or a function of
the elapsed seconds since the meter was opened) into a *raw hardware counter* that behaves like
NVML's or RAPL's: it only moves every ``update_period_s``, wraps at ``wrap_at_j`` and resets to
zero at scripted times. :meth:`FakeMeter.read` turns that raw counter into cumulative energy with
the same :class:`~joulebench.meters.base.CounterAccumulator` the real backends use, so wrap and
reset handling is exercised end to end.

Exactness: at an update instant the raw counter holds the exact integral of the trace (constant
traces analytically; callables with composite Simpson's rule on 16 panels per update period).
As with real hardware, energy between the last read before a *reset* and the reset itself is
lost, and a counter that wraps more than once between two reads is undercounted; read at least
once per update period (the timeline sampler does) to avoid both.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from joulebench.meters.base import CounterAccumulator, Method, Reading, check_domain

PowerTrace = float | Mapping[str, float] | Callable[[float], Mapping[str, float]]

DEFAULT_DOMAIN = "gpu:0"
_PANELS_PER_PERIOD = 16


class FakeMeter:
    """Scripted power trace with a hardware-like counter (update period, wraparound, resets)."""

    description = "scripted power trace (test double, not a measurement)"

    def __init__(
        self,
        power_w: PowerTrace = 100.0,
        *,
        update_period_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        wrap_at_j: float | None = None,
        resets_at_s: Sequence[float] = (),
        method: Method = Method.FAKE,
        name: str = "fake",
    ) -> None:
        if not update_period_s > 0:
            raise ValueError(f"update_period_s must be positive, got {update_period_s}")
        if wrap_at_j is not None and not wrap_at_j > 0:
            raise ValueError(f"wrap_at_j must be positive, got {wrap_at_j}")
        self.name = name
        self._clock = clock
        self._period_s = float(update_period_s)
        self._wrap_at_j = None if wrap_at_j is None else float(wrap_at_j)
        self._resets_at_s = sorted(float(r) for r in resets_at_s)
        self._method = Method(method)
        self._fn: Callable[[float], Mapping[str, float]] | None
        self._constant: dict[str, float] | None
        if callable(power_w):
            self._fn, self._constant = power_w, None
            sample = dict(power_w(0.0))
        else:
            if isinstance(power_w, Mapping):
                sample = {str(k): float(v) for k, v in power_w.items()}
            else:
                sample = {DEFAULT_DOMAIN: float(power_w)}
            self._fn, self._constant = None, sample
        if not sample:
            raise ValueError("the power trace must have at least one domain")
        for domain, watts in sample.items():
            check_domain(domain)
            if not math.isfinite(watts) or watts < 0:
                raise ValueError(f"power for {domain} must be a finite, non-negative number")
        self._domains = dict.fromkeys(sorted(sample), self._method)
        # Cache of the exact integral at update instants (callables are integrated incrementally).
        self._tick_cache: tuple[int, dict[str, float]] = (0, dict.fromkeys(self._domains, 0.0))
        self._t0 = clock()
        self._accumulators = {d: CounterAccumulator(0.0, self._wrap_at_j) for d in self._domains}
        self._closed = False
        self._lock = threading.Lock()

    # -- Meter protocol -------------------------------------------------------------------------
    @property
    def domains(self) -> Mapping[str, Method]:
        return dict(self._domains)

    @property
    def update_period_s(self) -> float:
        return self._period_s

    def read(self) -> Reading:
        if self._closed:
            raise RuntimeError(f"meter {self.name!r} is closed")
        with self._lock:  # the timeline thread and window edges read concurrently
            now = self._clock()
            raw = self.raw_counter_j(now - self._t0)
            energy = {d: self._accumulators[d].update(raw[d]) for d in self._domains}
        return Reading(now, energy)

    def close(self) -> None:
        self._closed = True

    def parameters(self) -> dict[str, object]:
        return {
            "trace": "callable" if self._fn is not None else dict(self._constant or {}),
            "update_period_s": self._period_s,
            "wrap_at_j": self._wrap_at_j,
            "resets_at_s": list(self._resets_at_s),
        }

    # -- the simulated hardware -----------------------------------------------------------------
    @property
    def wraps(self) -> int:
        return sum(a.wraps for a in self._accumulators.values())

    @property
    def resets(self) -> int:
        return sum(a.resets for a in self._accumulators.values())

    def power_at(self, elapsed_s: float) -> dict[str, float]:
        if self._constant is not None:
            return dict(self._constant)
        assert self._fn is not None
        values = self._fn(elapsed_s)
        return {d: float(values.get(d, 0.0)) for d in self._domains}

    def exact_energy_j(self, elapsed_s: float) -> dict[str, float]:
        """The exact integral of the trace from 0 to ``elapsed_s`` (the ground truth for tests)."""
        ticks = math.floor(elapsed_s / self._period_s)
        base = self._energy_at_tick(ticks)
        rest = self._integrate(ticks * self._period_s, elapsed_s)
        return {d: base[d] + rest[d] for d in self._domains}

    def raw_counter_j(self, elapsed_s: float) -> dict[str, float]:
        """What the hardware register shows at ``elapsed_s``: last update, since reset, wrapped."""
        ticks = max(0, math.floor(elapsed_s / self._period_s + 1e-9))
        energy = self._energy_at_tick(ticks)
        last_reset = max((r for r in self._resets_at_s if r <= elapsed_s), default=None)
        if last_reset is not None:
            at_reset = self.exact_energy_j(last_reset)
            energy = {d: max(0.0, energy[d] - at_reset[d]) for d in energy}
        if self._wrap_at_j is not None:
            energy = {d: math.fmod(e, self._wrap_at_j) for d, e in energy.items()}
        return energy

    def _energy_at_tick(self, ticks: int) -> dict[str, float]:
        if self._constant is not None:
            t = ticks * self._period_s
            return {d: p * t for d, p in self._constant.items()}
        cached_ticks, cached = self._tick_cache
        if ticks < cached_ticks:  # an earlier instant: integrate from scratch
            return self._integrate(0.0, ticks * self._period_s)
        energy = dict(cached)
        for k in range(cached_ticks, ticks):
            step = self._integrate(k * self._period_s, (k + 1) * self._period_s)
            for d in energy:
                energy[d] += step[d]
        self._tick_cache = (ticks, energy)
        return dict(energy)

    def _integrate(self, a: float, b: float) -> dict[str, float]:
        if b <= a:
            return dict.fromkeys(self._domains, 0.0)
        if self._constant is not None:
            return {d: p * (b - a) for d, p in self._constant.items()}
        panels = max(2, 2 * math.ceil(_PANELS_PER_PERIOD * (b - a) / self._period_s / 2))
        h = (b - a) / panels
        total = dict.fromkeys(self._domains, 0.0)
        for i in range(panels + 1):
            weight = 1 if i in (0, panels) else (4 if i % 2 else 2)
            for d, p in self.power_at(a + i * h).items():
                total[d] += weight * p
        return {d: v * h / 3 for d, v in total.items()}
