"""Arrival processes: when each request of a load test is *intended* to be sent.

Every process is chosen by name from a spec string (``poisson:20``, ``uniform:50ms,300ms``…),
owns a seeded :class:`random.Random`, and precomputes ``schedule(n)``: the intended send offsets
in seconds from the start of the test, non-decreasing, the first at 0. ``sequential`` is the
exception: a closed loop (each request sent when the previous one finished), flagged by
``closed_loop``; its schedule is all zeros and the runner ignores it.

``uniform:K,L`` is a *renewal* process: the gaps between consecutive arrivals are drawn i.i.d.
from U(K, L) and accumulated, so request ``i`` is always sent before request ``i+1``. The study's
scripts instead drew a fresh delay per request from the same start, which reorders arrivals and
is not the process they described; joulebench does not reproduce that mistake.

Specs:

- ``sequential`` — closed loop, one request in flight.
- ``burst`` — every request at offset 0.
- ``fixed:500ms`` — one request every 500 ms (units ``us``, ``ms``, ``s``).
- ``uniform:50ms,300ms`` — renewal, gaps ~ U(50 ms, 300 ms).
- ``poisson:RATE`` — gaps ~ Exp(RATE), RATE in requests/s.
- ``gamma:RATE,CV`` — gaps ~ Gamma with mean 1/RATE and coefficient of variation CV
  (CV = 1 is Poisson, > 1 burstier, < 1 more regular).
- ``trace:FILE`` — replay timestamps (s) from a file: one per line, or CSV with a header whose
  timestamp column is ``timestamp``/``t_s``/``time_s``/``timestamp_s`` (seconds) or
  ``timestamp_ms``/``t_ms`` (milliseconds). Times are made relative to the first one.
"""

from __future__ import annotations

import csv
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from joulebench.errors import ConfigError, UnknownName, at_least
from joulebench.units import parse_duration_s


def _positive_float(text: str, *, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what}: must be a positive number, got {text!r}")
    return value


class ArrivalProcess(ABC):
    """Base class: a seeded generator of intended send offsets."""

    name: ClassVar[str]
    closed_loop: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    @abstractmethod
    def gaps(self, n: int) -> list[float]:
        """``n - 1`` gaps (s) between consecutive intended sends."""

    def schedule(self, n: int) -> list[float]:
        """Intended send offsets (s) of ``n`` requests: first at 0, non-decreasing."""
        at_least(n, 1, "the number of requests")
        self.rng.seed(self.seed)  # same seed → same schedule, however often it is asked
        offsets = [0.0]
        for gap in self.gaps(n):
            offsets.append(offsets[-1] + gap)
        return offsets

    @property
    def target_rate_rps(self) -> float | None:
        """Mean offered rate (req/s); ``None`` when it is set by the server (closed loop, burst)."""
        return None

    @property
    def spec(self) -> str:
        return self.name

    def describe(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "kind": self.name,
            "closed_loop": self.closed_loop,
            "target_rate_rps": self.target_rate_rps,
            "seed": self.seed,
        }


_REGISTRY: dict[str, Callable[[str, int], ArrivalProcess]] = {}


def register(name: str) -> Callable[[type[ArrivalProcess]], type[ArrivalProcess]]:
    def deco(cls: type[ArrivalProcess]) -> type[ArrivalProcess]:
        cls.name = name
        _REGISTRY[name] = cls.from_args  # type: ignore[attr-defined]
        return cls

    return deco


def known_arrivals() -> list[str]:
    return sorted(_REGISTRY)


def parse_arrival(spec: str, *, seed: int = 0) -> ArrivalProcess:
    """Build an arrival process from ``NAME`` or ``NAME:ARGS``; unknown names list known ones."""
    name, _, args = spec.strip().partition(":")
    factory = _REGISTRY.get(name.strip().lower())
    if factory is None:
        raise UnknownName("arrival process", name, known_arrivals())
    return factory(args.strip(), seed)


def _positive(value: float, what: str, unit: str = "") -> None:
    """Refuse a ``value`` that is not finite and > 0 (``what must be positive, got …``)."""
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be positive, got {value}{unit}")


class _NoGaps(ArrivalProcess):
    """A process without arguments whose schedule is all zeros."""

    @classmethod
    def from_args(cls, args: str, seed: int) -> ArrivalProcess:
        if args:
            raise ConfigError(f"arrival '{cls.name}' takes no arguments, got {cls.name}:{args}")
        return cls(seed)

    def gaps(self, n: int) -> list[float]:
        return [0.0] * (n - 1)


@register("sequential")
class Sequential(_NoGaps):
    """Closed loop: the next request leaves when the previous one has finished (the runner
    ignores the schedule)."""

    closed_loop = True


@register("burst")
class Burst(_NoGaps):
    """All requests at once."""


@register("fixed")
class Fixed(ArrivalProcess):
    """One request every ``interval_s``."""

    def __init__(self, interval_s: float, seed: int = 0) -> None:
        super().__init__(seed)
        _positive(interval_s, "fixed interval", " s")
        self.interval_s = interval_s

    @classmethod
    def from_args(cls, args: str, seed: int) -> Fixed:
        if not args:
            raise ConfigError("arrival 'fixed' needs an interval, e.g. fixed:500ms")
        return cls(parse_duration_s(args, what="fixed interval"), seed)

    def gaps(self, n: int) -> list[float]:
        return [self.interval_s] * (n - 1)

    @property
    def target_rate_rps(self) -> float:
        return 1.0 / self.interval_s

    @property
    def spec(self) -> str:
        return f"fixed:{self.interval_s * 1e3:g}ms"


@register("uniform")
class UniformRenewal(ArrivalProcess):
    """Renewal process with gaps i.i.d. U(low_s, high_s), accumulated (order is kept)."""

    def __init__(self, low_s: float, high_s: float, seed: int = 0) -> None:
        super().__init__(seed)
        if not (0 <= low_s <= high_s) or not math.isfinite(high_s) or high_s <= 0:
            raise ConfigError(
                f"uniform gaps need 0 ≤ low ≤ high and high > 0, got {low_s} s, {high_s} s"
            )
        self.low_s, self.high_s = low_s, high_s

    @classmethod
    def from_args(cls, args: str, seed: int) -> UniformRenewal:
        parts = [p for p in args.split(",") if p.strip()]
        if len(parts) != 2:
            raise ConfigError(
                f"arrival 'uniform' needs two durations, e.g. uniform:50ms,300ms; got {args!r}"
            )
        low = parse_duration_s(parts[0], what="uniform low", allow_zero=True)
        high = parse_duration_s(parts[1], what="uniform high")
        return cls(low, high, seed)

    def gaps(self, n: int) -> list[float]:
        return [self.rng.uniform(self.low_s, self.high_s) for _ in range(n - 1)]

    @property
    def target_rate_rps(self) -> float:
        return 2.0 / (self.low_s + self.high_s)

    @property
    def spec(self) -> str:
        return f"uniform:{self.low_s * 1e3:g}ms,{self.high_s * 1e3:g}ms"


@register("poisson")
class Poisson(ArrivalProcess):
    """Poisson arrivals: gaps i.i.d. Exp(rate_rps)."""

    def __init__(self, rate_rps: float, seed: int = 0) -> None:
        super().__init__(seed)
        _positive(rate_rps, "poisson rate", " req/s")
        self.rate_rps = rate_rps

    @classmethod
    def from_args(cls, args: str, seed: int) -> Poisson:
        if not args:
            raise ConfigError("arrival 'poisson' needs a rate in req/s, e.g. poisson:20")
        return cls(_positive_float(args, what="poisson rate (req/s)"), seed)

    def gaps(self, n: int) -> list[float]:
        return [self.rng.expovariate(self.rate_rps) for _ in range(n - 1)]

    @property
    def target_rate_rps(self) -> float:
        return self.rate_rps

    @property
    def spec(self) -> str:
        return f"poisson:{self.rate_rps:g}"


@register("gamma")
class Gamma(ArrivalProcess):
    """Gamma renewal process: mean gap 1/rate_rps, coefficient of variation ``cv``."""

    def __init__(self, rate_rps: float, cv: float, seed: int = 0) -> None:
        super().__init__(seed)
        _positive(rate_rps, "gamma rate", " req/s")
        _positive(cv, "gamma CV")
        self.rate_rps, self.cv = rate_rps, cv
        self.shape = 1.0 / (cv * cv)
        self.scale_s = 1.0 / (rate_rps * self.shape)

    @classmethod
    def from_args(cls, args: str, seed: int) -> Gamma:
        parts = [p for p in args.split(",") if p.strip()]
        if len(parts) != 2:
            raise ConfigError(f"arrival 'gamma' needs RATE,CV, e.g. gamma:20,2; got {args!r}")
        rate = _positive_float(parts[0], what="gamma rate (req/s)")
        return cls(rate, _positive_float(parts[1], what="gamma CV"), seed)

    def gaps(self, n: int) -> list[float]:
        return [self.rng.gammavariate(self.shape, self.scale_s) for _ in range(n - 1)]

    @property
    def target_rate_rps(self) -> float:
        return self.rate_rps

    @property
    def spec(self) -> str:
        return f"gamma:{self.rate_rps:g},{self.cv:g}"


_TRACE_COLUMNS_S = ("timestamp", "timestamp_s", "t_s", "time_s", "time")
_TRACE_COLUMNS_MS = ("timestamp_ms", "t_ms", "time_ms")


def read_trace(path: Path) -> list[float]:
    """Timestamps (s) from ``path``, validated; see the module docstring for the format."""
    if not path.is_file():
        raise ConfigError(f"trace file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read trace file {path}: {exc}") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if not rows:
        raise ConfigError(f"trace file {path} is empty: write one timestamp (s) per line")
    column, scale, start = 0, 1.0, 0
    header = [c.strip().lower() for c in rows[0]]
    try:
        float(header[0])
    except ValueError:
        names = {*_TRACE_COLUMNS_S, *_TRACE_COLUMNS_MS}
        found = [i for i, h in enumerate(header) if h in names]
        if not found:
            raise ConfigError(
                f"trace file {path}: header {rows[0]} has no timestamp column; name it one of "
                f"{', '.join(sorted(names))} or drop the header"
            ) from None
        column, start = found[0], 1
        scale = 1e-3 if header[column] in _TRACE_COLUMNS_MS else 1.0
    times: list[float] = []
    for lineno, row in enumerate(rows[start:], start=start + 1):
        cell = row[column].strip() if column < len(row) else ""
        try:
            t = float(cell) * scale
        except ValueError:
            raise ConfigError(
                f"trace file {path}, row {lineno}: {cell!r} is not a number"
            ) from None
        if not math.isfinite(t):
            raise ConfigError(f"trace file {path}, row {lineno}: timestamp {cell!r} is not finite")
        if times and t < times[-1]:
            raise ConfigError(
                f"trace file {path}, row {lineno}: timestamp {cell} is earlier than the previous "
                "one; sort the trace by time"
            )
        times.append(t)
    if not times:
        raise ConfigError(f"trace file {path} has a header but no timestamps")
    return [t - times[0] for t in times]


@register("trace")
class Trace(ArrivalProcess):
    """Replay recorded arrival times (relative to the first)."""

    def __init__(self, offsets_s: list[float], path: Path | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.offsets_s = offsets_s
        self.path = path

    @classmethod
    def from_args(cls, args: str, seed: int) -> Trace:
        if not args:
            raise ConfigError("arrival 'trace' needs a file, e.g. trace:arrivals.csv")
        path = Path(args).expanduser()
        return cls(read_trace(path), path, seed)

    def gaps(self, n: int) -> list[float]:
        if n > len(self.offsets_s):
            raise ConfigError(
                f"the trace has {len(self.offsets_s)} timestamps but {n} requests were asked; "
                f"pass --n {len(self.offsets_s)} or fewer"
            )
        o = self.offsets_s
        return [o[i + 1] - o[i] for i in range(n - 1)]

    @property
    def target_rate_rps(self) -> float | None:
        span = self.offsets_s[-1] if self.offsets_s else 0.0
        return (len(self.offsets_s) - 1) / span if span > 0 else None

    @property
    def spec(self) -> str:
        return f"trace:{self.path}" if self.path else "trace"
