"""A gateway policy in front of a modelled upstream, on a simulated clock (a test double).

:func:`simulate` drives a :class:`~joulebench.shape.policies.Policy` exactly as the
:class:`~joulebench.shape.shaper.Shaper` and the gateway do — decide after every arrival and at
every wake-up, release from the head of a FIFO queue, report arrivals, releases, responses and
``/metrics`` scrapes through the ``observe_*`` hooks — but with scripted arrival times and an
upstream whose timings follow :class:`ModelUpstream`. Nothing sleeps; a run of thousands of
requests takes milliseconds, so tests can check every request's delay against a bound.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from joulebench.shape.policies import Policy, ResponseEvent
from joulebench.shape.shaper import Release


@dataclass(frozen=True, slots=True)
class ModelUpstream:
    """A continuous-batching server, coarsely: a request released while ``b`` requests run
    (itself included) takes ``base_s + per_row_s·(b − 1)``; a group of ``g`` gets its first
    token after ``ttft_base_s + ttft_per_row_s·(g − 1)``. ``fails(seq)`` makes a request 502.
    With ``energy_base_j`` set it reports each response's energy, as joulebench serve does:
    the batch's ``energy_base_j + energy_per_row_j·(b − 1)`` shared by its ``b`` requests."""

    base_s: float = 0.12
    per_row_s: float = 0.02
    ttft_base_s: float = 0.04
    ttft_per_row_s: float = 0.01
    #: each request already running delays a new group's first token by this much (a bigger
    #: batch's slower steps), as a busy real server does
    ttft_per_running_s: float = 0.0
    fails: Callable[[int], bool] | None = None
    metrics: bool = True
    energy_base_j: float | None = None
    energy_per_row_j: float = 0.0

    def energy_j(self, batch: int) -> float | None:
        """The energy one response reports when it ran beside ``batch − 1`` others."""
        if self.energy_base_j is None:
            return None
        return (self.energy_base_j + self.energy_per_row_j * (batch - 1)) / max(batch, 1)


_DONE, _SCRAPE, _ARRIVE, _WAKE = range(4)  # order of simultaneous events
#: A response's event data: group, released at, first byte at, status, reported energy.
_Done = tuple[int, float, float, int, float | None]


@dataclass(frozen=True, slots=True)
class Served:
    """One request's time upstream in the simulation."""

    seq: int
    released_s: float
    first_byte_s: float
    ended_s: float


def busy_s(served: Sequence[Served]) -> float:
    """Seconds during which at least one request was upstream (the modelled server's busy time:
    a continuous-batching server's energy above idle grows with it)."""
    total, end = 0.0, -math.inf
    for s in sorted(served, key=lambda x: x.released_s):
        if s.ended_s > end:
            total += s.ended_s - max(s.released_s, end)
            end = s.ended_s
    return total


def simulate(
    policy: Policy,
    arrivals_s: Sequence[float],
    upstream: ModelUpstream | None = None,
    *,
    origin_s: float = 0.0,
    served: list[Served] | None = None,
) -> list[Release]:
    """Every request's :class:`Release`, in release order. ``arrivals_s`` must be sorted.

    ``served``, when given, receives each request's upstream times (:class:`Served`)."""
    up = upstream or ModelUpstream()
    if any(b < a for a, b in itertools.pairwise(arrivals_s)):
        raise ValueError("arrival times must be sorted")
    events: list[tuple[float, int, int, tuple[object, ...]]] = []
    order = itertools.count()

    def push(t: float, kind: int, *data: object) -> None:
        heapq.heappush(events, (t, kind, next(order), data))

    for seq, t in enumerate(arrivals_s):
        push(t, _ARRIVE, seq)
    interval = policy.metrics_interval_s
    if up.metrics and interval is not None and arrivals_s:
        push(origin_s, _SCRAPE)
    policy.start(origin_s)
    queue: deque[tuple[int, float]] = deque()
    out: list[Release] = []
    groups = itertools.count()
    state = {"in_flight": 0, "wake": 0}

    def pump(now: float) -> None:
        while queue:
            d = policy.decide([a for _, a in queue], now)
            if d.release_n <= 0:
                state["wake"] += 1
                if d.wake_at_s is not None:
                    push(max(d.wake_at_s, now), _WAKE, state["wake"])
                return
            group = [queue.popleft() for _ in range(d.release_n)]
            gid = next(groups)
            policy.observe_release(gid, [a for _, a in group], now)
            running = state["in_flight"]
            state["in_flight"] += len(group)
            first = now + up.ttft_base_s + up.ttft_per_row_s * (len(group) - 1)
            first += up.ttft_per_running_s * running
            end = now + up.base_s + up.per_row_s * (state["in_flight"] - 1)
            for pos, (seq, arrived) in enumerate(group):
                out.append(Release(seq, gid, pos, len(group), arrived, now))
                status = 502 if up.fails is not None and up.fails(seq) else 200
                energy = up.energy_j(state["in_flight"]) if status == 200 else None
                push(end, _DONE, gid, now, min(first, end), status, energy)
                if served is not None:
                    served.append(Served(seq, now, min(first, end), end))

    while events:
        now, kind, _, data = heapq.heappop(events)
        if kind == _ARRIVE:
            queue.append((int(data[0]), now))  # type: ignore[call-overload]
            policy.observe_arrival(now)
            pump(now)
        elif kind == _WAKE:
            if data[0] == state["wake"]:
                pump(now)
        elif kind == _DONE:
            gid, released, first, status, energy = cast(_Done, data)
            state["in_flight"] -= 1
            policy.observe_response(
                ResponseEvent(gid, released, first, now, status, True, energy_j=energy)
            )
        elif kind == _SCRAPE:
            n = float(state["in_flight"])
            policy.observe_upstream(
                now,
                {
                    "joulebench_running_requests": n,
                    "joulebench_queue_length": 0.0,
                    "joulebench_batch_size": n,
                },
            )
            if any(k != _SCRAPE for _, k, _, _ in events) or queue:
                push(now + interval, _SCRAPE)  # type: ignore[operator]
    return out
