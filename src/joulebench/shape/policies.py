"""Shaping policies: pure decisions about when queued requests are released upstream.

A policy sees the arrival times of the requests waiting in the gateway (oldest first) and the
current time, and answers two things (:class:`Decision`): how many requests to release *now*
from the head of the queue, and when it next needs to be asked. It owns no timers, sockets or
threads, so it is tested with plain numbers; :class:`joulebench.shape.shaper.Shaper` drives it
with a real clock.

Policies (chosen by name, see :func:`parse_policy`):

``passthrough``
    every request is released the moment it arrives (the unshaped baseline, same code path).
``cadence:T``
    ticks every ``T`` from the gateway's start; each tick releases everything queued, so the
    server sees aligned groups.
``window:N,T``
    a group is released as soon as ``N`` requests wait (exactly ``N``: a burst of ``3N`` gives
    three groups), or when the oldest waiting request has waited ``T``.

``slo:BUDGET[,MAX_BATCH]``
    adaptive: learns the arrival rate and what a release costs upstream, and holds each group
    only as long as that is expected to lower energy per request, never past ``BUDGET``
    (:mod:`joulebench.shape.slo`).

Adaptive policies also receive feedback through the ``observe_*`` hooks (arrivals, releases,
responses, upstream ``/metrics`` samples); fixed policies ignore it.

``max_delay_s`` bounds the delay any request may get: when the oldest waiting request reaches it,
everything queued is released together (the group stays intact and nobody waits longer). A
request's added delay is therefore at most ``min(policy bound, max_delay_s)``.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from joulebench.errors import ConfigError, UnknownName, at_least
from joulebench.units import parse_duration_s

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: Tolerance for "the deadline has come" comparisons (float tick arithmetic, timer jitter).
EPS_S = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    """Release ``release_n`` requests from the head now; ask again at ``wake_at_s``.

    ``wake_at_s`` is ``None`` when nothing remains waiting after this release.
    """

    release_n: int
    wake_at_s: float | None

    @classmethod
    def all_at(cls, deadline_s: float, waiting: int, now_s: float) -> Decision:
        """Release all ``waiting`` once ``deadline_s`` has come (within :data:`EPS_S`), else
        nothing until then: the fixed policies' one rule, each with its own deadline."""
        if now_s + EPS_S >= deadline_s:
            return cls(waiting, None)
        return cls(0, deadline_s)


@dataclass(frozen=True, slots=True)
class ResponseEvent:
    """One request of group ``group`` is over, as the gateway (or the simulator) saw it."""

    group: int
    released_s: float
    first_byte_s: float | None  # when its first body byte came back
    ended_s: float
    status: int | None  # HTTP status; ``None``: no response
    complete: bool  # its body was relayed to the end
    energy_j: float | None = None  # what the upstream reported for it (``None``: nothing)


class Policy(ABC):
    """Decides release times for a FIFO queue of waiting requests."""

    #: Registry name (``passthrough``, ``cadence``, ``window``).
    kind: str = ""

    def __init__(self, *, max_delay_s: float | None = None) -> None:
        if max_delay_s is not None and max_delay_s < 0:
            raise ConfigError(f"max delay must be ≥ 0 ms, got {max_delay_s * 1e3:g} ms")
        self.max_delay_s = max_delay_s
        self.origin_s = 0.0

    def start(self, origin_s: float) -> None:
        """Set the time the gateway started (cadence ticks count from it)."""
        self.origin_s = origin_s

    @abstractmethod
    def _decide(self, waiting_s: Sequence[float], now_s: float) -> Decision:
        """The policy's own rule, without the max-delay bound; ``waiting_s`` is non-empty."""

    def decide(self, waiting_s: Sequence[float], now_s: float) -> Decision:
        """How many of ``waiting_s`` (arrival times, oldest first) to release at ``now_s``."""
        if not waiting_s:
            return Decision(0, None)
        own = self._decide(waiting_s, now_s)
        if self.max_delay_s is None:
            return own
        forced_at = waiting_s[0] + self.max_delay_s
        if now_s + EPS_S >= forced_at:
            return Decision(len(waiting_s), None)
        if own.release_n:
            return own
        wake = forced_at if own.wake_at_s is None else min(own.wake_at_s, forced_at)
        return Decision(0, wake)

    def bound_s(self) -> float | None:
        """The longest delay any request can get from this policy (``None``: unbounded)."""
        own = self._own_bound_s()
        if self.max_delay_s is None:
            return own
        return self.max_delay_s if own is None else min(own, self.max_delay_s)

    @abstractmethod
    def _own_bound_s(self) -> float | None: ...

    @abstractmethod
    def spec(self) -> str:
        """The policy as the user would write it (``cadence:500ms``)."""

    def describe(self) -> str:
        extra = "" if self.max_delay_s is None else f" max-delay {self.max_delay_s * 1e3:g}ms"
        return self.spec() + extra

    def to_dict(self) -> dict[str, object]:
        return {
            "spec": self.spec(),
            "kind": self.kind,
            "max_delay_ms": None if self.max_delay_s is None else self.max_delay_s * 1e3,
            "bound_ms": None if self.bound_s() is None else self.bound_s() * 1e3,  # type: ignore[operator]
        }

    # -- feedback: the Shaper and Gateway report what happens; fixed policies ignore it ------
    #: Seconds between scrapes of the upstream's ``/metrics`` (``None``: not wanted).
    metrics_interval_s: float | None = None

    def observe_arrival(self, t_s: float) -> None:
        """A request entered the queue at ``t_s``."""
        return None

    def observe_release(self, group: int, arrivals_s: Sequence[float], released_s: float) -> None:
        """Group ``group`` (these arrival times, in order) was released at ``released_s``."""
        return None

    def observe_response(self, response: ResponseEvent) -> None:
        """One request of a released group is over (see :class:`ResponseEvent`)."""
        return None

    def observe_upstream(self, t_s: float, samples: dict[str, float]) -> None:
        """A scrape of the upstream's ``/metrics`` (parsed samples) taken at ``t_s``."""
        return None

    def explain(self) -> dict[str, object] | None:
        """The policy's decisions and estimates, JSON-able (``None`` for fixed policies)."""
        return None

    def forget_releases(self) -> None:
        """Drop the releases :meth:`explain` would list, keeping what was learnt from them
        (a policy warmed by unmeasured traffic before a measured run)."""
        return None

    def metric_families(self) -> list[Metric]:
        """Extra Prometheus families for the gateway's ``/metrics``."""
        return []

    def release_schedule(self, arrivals_s: Sequence[float]) -> list[float]:
        """Offline simulation: the release time of each arrival (sorted), with an exact clock.

        Used by tests and by the sweep to predict added delay before running anything.
        """
        times = list(arrivals_s)
        if any(b < a for a, b in itertools.pairwise(times)):
            raise ValueError("arrival times must be sorted (a FIFO queue cannot reorder)")
        out: list[float] = []
        waiting: list[float] = []
        i = 0
        now = times[0] if times else 0.0
        while i < len(times) or waiting:
            # admit everything that has arrived by `now`, deciding after each arrival
            while i < len(times) and times[i] <= now + EPS_S:
                waiting.append(times[i])
                i += 1
                self._drain(waiting, now, out)
            self._drain(waiting, now, out)
            nxt = [times[i]] if i < len(times) else []
            if waiting:
                d = self.decide(waiting, now)
                if d.wake_at_s is not None:
                    nxt.append(d.wake_at_s)
            if not nxt:
                break
            now = max(now, min(nxt))
        return out

    def _drain(self, waiting: list[float], now: float, out: list[float]) -> None:
        while waiting:
            d = self.decide(waiting, now)
            if d.release_n <= 0:
                return
            out.extend([now] * d.release_n)
            del waiting[: d.release_n]


class Passthrough(Policy):
    kind = "passthrough"

    def _decide(self, waiting_s: Sequence[float], now_s: float) -> Decision:
        return Decision(len(waiting_s), None)

    def _own_bound_s(self) -> float | None:
        return 0.0

    def spec(self) -> str:
        return "passthrough"


class Cadence(Policy):
    kind = "cadence"

    def __init__(self, period_s: float, *, max_delay_s: float | None = None) -> None:
        super().__init__(max_delay_s=max_delay_s)
        if period_s <= 0:
            raise ConfigError(f"cadence period must be positive, got {period_s * 1e3:g} ms")
        self.period_s = period_s

    def next_tick_s(self, t_s: float) -> float:
        """The first tick at or after ``t_s``."""
        k = math.ceil((t_s - self.origin_s) / self.period_s - 1e-9)
        return self.origin_s + max(k, 0) * self.period_s

    def _decide(self, waiting_s: Sequence[float], now_s: float) -> Decision:
        return Decision.all_at(self.next_tick_s(waiting_s[0]), len(waiting_s), now_s)

    def _own_bound_s(self) -> float | None:
        return self.period_s

    def spec(self) -> str:
        return f"cadence:{self.period_s * 1e3:g}ms"


class Window(Policy):
    kind = "window"

    def __init__(self, size: int, timeout_s: float, *, max_delay_s: float | None = None) -> None:
        super().__init__(max_delay_s=max_delay_s)
        at_least(size, 1, "window size N")
        if timeout_s <= 0:
            raise ConfigError(f"window timeout must be positive, got {timeout_s * 1e3:g} ms")
        self.size = size
        self.timeout_s = timeout_s

    def _decide(self, waiting_s: Sequence[float], now_s: float) -> Decision:
        if len(waiting_s) >= self.size:
            rest = waiting_s[self.size :]
            return Decision(self.size, rest[0] + self.timeout_s if rest else None)
        return Decision.all_at(waiting_s[0] + self.timeout_s, len(waiting_s), now_s)

    def _own_bound_s(self) -> float | None:
        return self.timeout_s

    def spec(self) -> str:
        return f"window:{self.size},{self.timeout_s * 1e3:g}ms"


def _make_passthrough(args: str, max_delay_s: float | None) -> Policy:
    if args:
        raise ConfigError(f"policy 'passthrough' takes no arguments, got {args!r}")
    return Passthrough(max_delay_s=max_delay_s)


def _make_cadence(args: str, max_delay_s: float | None) -> Policy:
    if not args:
        raise ConfigError("policy 'cadence' needs a period: cadence:500ms")
    return Cadence(parse_duration_s(args, what="cadence period"), max_delay_s=max_delay_s)


def _make_window(args: str, max_delay_s: float | None) -> Policy:
    parts = [p.strip() for p in args.split(",")]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"policy 'window' needs N and T: window:8,200ms (got {args!r})")
    try:
        size = int(parts[0])
    except ValueError:
        raise ConfigError(f"window size N must be an integer, got {parts[0]!r}") from None
    return Window(size, parse_duration_s(parts[1], what="window timeout"), max_delay_s=max_delay_s)


def _make_slo(args: str, max_delay_s: float | None) -> Policy:
    from joulebench.shape.slo import parse_slo

    return parse_slo(args, max_delay_s)


POLICIES: dict[str, Callable[[str, float | None], Policy]] = {
    "passthrough": _make_passthrough,
    "cadence": _make_cadence,
    "window": _make_window,
    "slo": _make_slo,
}


def parse_policy(spec: str, *, max_delay_ms: float | None = None) -> Policy:
    """``passthrough`` | ``cadence:500ms`` | ``window:8,200ms`` | ``slo:500ms`` (+ optional max
    delay) → Policy."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty shaping policy; known: " + ", ".join(sorted(POLICIES)))
    name, _, args = spec.strip().partition(":")
    factory = POLICIES.get(name.strip().lower())
    if factory is None:
        raise UnknownName("shaping policy", name, list(POLICIES))
    if max_delay_ms is not None and (not math.isfinite(max_delay_ms) or max_delay_ms < 0):
        raise ConfigError(f"--max-delay-ms must be a finite number ≥ 0, got {max_delay_ms}")
    return factory(args.strip(), None if max_delay_ms is None else max_delay_ms / 1e3)
