"""Background power-timeline sampler: reads a meter at a fixed rate (≥10 Hz by default).

The timeline holds cumulative energy per domain at each sample; power over any span and energy
between any two instants (linearly interpolated between samples) derive from it. Load tests and
the embedded server use it for per-request attribution.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from joulebench.meters.base import Meter, Reading
from joulebench.meters.periodic import Periodic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    energy_j: dict[str, float]

    @property
    def total_j(self) -> float:
        return float(sum(self.energy_j.values()))


class TimelineFull(RuntimeError):
    """The timeline reached its sample cap: it stops sampling rather than grow without bound."""


class PowerTimeline:
    """Sample ``meter`` every ``1/hz`` seconds on a daemon thread until :meth:`stop`.

    Use as a context manager, or call :meth:`start`/:meth:`stop`. :meth:`sample_now` adds a sample
    from the caller's thread (window edges), so a timeline always covers the whole span.
    """

    def __init__(
        self,
        meter: Meter,
        hz: float = 10.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_samples: int = 2_000_000,
    ) -> None:
        if hz <= 0:
            raise ValueError(f"sampling rate must be positive, got {hz} Hz")
        self.meter = meter
        self.period_s = 1.0 / hz
        self._sleep = sleep
        self._max_samples = max_samples
        self._samples: list[Sample] = []
        self._times: list[float] = []
        self._lock = threading.Lock()
        self._ticker = Periodic(
            self._tick, self.period_s, name=f"joulebench-timeline ({self.meter.name})"
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> PowerTimeline:
        if self._ticker.started:
            raise RuntimeError("timeline already started")
        self.sample_now()
        self._ticker.start()
        return self

    @property
    def sampling(self) -> bool:
        """The background sampler runs (it stops at :meth:`stop`, or once the timeline is
        full)."""
        return self._ticker.alive

    def stop(self) -> None:
        self._ticker.stop()
        try:
            self.sample_now()
        except TimelineFull:
            log.warning("timeline is full: it does not cover the span after its last sample")

    def __enter__(self) -> PowerTimeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tick(self) -> bool:
        """One background sample; ``False`` (the sampler stops) once the timeline is full."""
        try:
            self.sample_now()
        except TimelineFull:
            log.warning(
                "timeline on meter %s reached %d samples: sampling stopped",
                self.meter.name,
                self._max_samples,
            )
            return False
        return True  # any other failure: Periodic logs it and samples on

    def sample_now(self) -> Sample:
        reading: Reading = self.meter.read()
        sample = Sample(reading.timestamp_s, dict(reading.energy_j))
        with self._lock:
            if self._times and sample.t_s < self._times[-1]:
                return self._samples[-1]  # clocks are monotonic; ignore a late duplicate
            if len(self._samples) >= self._max_samples:
                raise TimelineFull(f"timeline exceeded {self._max_samples} samples")
            self._samples.append(sample)
            self._times.append(sample.t_s)
        return sample

    # -- queries -----------------------------------------------------------------------------
    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def energy_at(self, t_s: float) -> float:
        """Cumulative total energy at ``t_s``, interpolated; clamped to the covered span."""
        with self._lock:
            times, samples = self._times, self._samples
            if not samples:
                raise RuntimeError("timeline has no samples")
            i = bisect.bisect_right(times, t_s)
            if i == 0:
                return samples[0].total_j
            if i == len(samples):
                return samples[-1].total_j
            a, b = samples[i - 1], samples[i]
            frac = (t_s - a.t_s) / (b.t_s - a.t_s) if b.t_s > a.t_s else 1.0
            return a.total_j + frac * (b.total_j - a.total_j)

    def energy_between(self, t0_s: float, t1_s: float) -> float:
        return self.energy_at(t1_s) - self.energy_at(t0_s)

    def series(self) -> list[tuple[float, float]]:
        """(t_s, cumulative total energy J) pairs, for attribution."""
        return [(s.t_s, s.total_j) for s in self.samples]

    def power_w(self) -> list[tuple[float, float]]:
        """(midpoint t_s, average power W) for each pair of consecutive samples."""
        pts = self.series()
        return [
            ((t0 + t1) / 2, (e1 - e0) / (t1 - t0))
            for (t0, e0), (t1, e1) in itertools.pairwise(pts)
            if t1 > t0
        ]
