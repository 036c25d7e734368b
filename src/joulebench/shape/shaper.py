"""The asyncio side of shaping: a bounded FIFO of waiting requests driven by a :class:`Policy`.

Each request calls :meth:`Shaper.admit`, which either refuses at once (:class:`QueueFull`, the
gateway answers 429) or waits until the policy releases it and returns a :class:`Release`
(group id, position, size, added delay). Releases happen on the event loop in FIFO order, so
requests of one group resume, and are sent upstream, in the order they arrived. A request whose
client leaves while it waits is removed from the queue (its waiter is cancelled).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from joulebench.errors import at_least
from joulebench.shape.metrics import GatewayMetrics
from joulebench.shape.policies import Policy

log = logging.getLogger(__name__)

#: Requests the gateway holds before it answers 429 (unless told otherwise).
DEFAULT_MAX_QUEUE = 1024


class QueueFull(Exception):
    """The gateway's queue is at capacity; retry after ``retry_after_s``."""

    def __init__(self, capacity: int, retry_after_s: float) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        super().__init__(
            f"gateway queue is full ({capacity} waiting); retry after {retry_after_s:.3f} s"
        )

    @property
    def retry_after_header(self) -> str:
        """Retry-After is whole seconds (RFC 9110), at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass(frozen=True, slots=True)
class Release:
    """Why and when a request left the gateway's queue."""

    seq: int  # admission order, 0-based, gateway-wide
    group: int  # release group id, 0-based
    position: int  # index inside the group (arrival order)
    group_size: int
    arrived_s: float
    released_s: float

    @property
    def delay_s(self) -> float:
        return self.released_s - self.arrived_s

    def headers(self) -> dict[str, str]:
        return {
            "x-gateway-delay-ms": f"{self.delay_s * 1e3:.3f}",
            "x-gateway-group": str(self.group),
            "x-gateway-group-size": str(self.group_size),
            "x-gateway-position": str(self.position),
            "x-gateway-seq": str(self.seq),
        }


@dataclass(slots=True)
class _Waiter:
    seq: int
    arrived_s: float
    future: asyncio.Future[Release]


class Shaper:
    """Holds requests and releases them as ``policy`` decides. Use on one event loop."""

    def __init__(
        self,
        policy: Policy,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        clock: Callable[[], float] = time.monotonic,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        at_least(max_queue, 1, "max queue", error=ValueError)
        self.policy = policy
        self.max_queue = max_queue
        self.clock = clock
        self.metrics = metrics if metrics is not None else GatewayMetrics(policy=policy.describe())
        self._queue: deque[_Waiter] = deque()
        self._seq = itertools.count()
        self._groups = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at_s: float | None = None
        self.release_log: list[Release] | None = None  # set to [] to record every release
        self.started_s: float | None = None

    def start(self) -> None:
        """Mark the gateway start (cadence ticks are aligned to it)."""
        self.started_s = self.clock()
        self.policy.start(self.started_s)

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def retry_after_s(self) -> float:
        """Time until the queue's head is due (a hint for 429 responses)."""
        bound = self.policy.bound_s()
        if self._wake_at_s is not None:
            return max(0.0, self._wake_at_s - self.clock())
        return bound if bound else 1.0

    async def admit(self) -> Release:
        """Queue the calling request and wait for its release (raises :class:`QueueFull`)."""
        if self.started_s is None:
            self.start()
        if len(self._queue) >= self.max_queue:
            self.metrics.rejected += 1
            raise QueueFull(self.max_queue, self.retry_after_s())
        loop = asyncio.get_running_loop()
        waiter = _Waiter(next(self._seq), self.clock(), loop.create_future())
        self._queue.append(waiter)
        self.metrics.admitted += 1
        self.policy.observe_arrival(waiter.arrived_s)
        self._pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._remove(waiter)  # no-op when it was released just before the cancellation
            raise

    def _remove(self, waiter: _Waiter) -> None:
        try:
            self._queue.remove(waiter)
        except ValueError:
            return
        self.metrics.cancelled_queued += 1
        self.metrics.queue_length = len(self._queue)
        self._pump()

    def _pump(self) -> None:
        """Release what is due now; arm one timer for the next decision."""
        now = self.clock()
        while self._queue:
            decision = self.policy.decide([w.arrived_s for w in self._queue], now)
            if decision.release_n <= 0:
                self._arm(decision.wake_at_s, now)
                break
            self._release([self._queue.popleft() for _ in range(decision.release_n)], now)
        else:
            self._arm(None, now)
        self.metrics.queue_length = len(self._queue)

    def _release(self, group: list[_Waiter], now: float) -> None:
        gid = next(self._groups)
        releases = [
            Release(w.seq, gid, i, len(group), w.arrived_s, max(now, w.arrived_s))
            for i, w in enumerate(group)
        ]
        self.metrics.observe_group(r.delay_s for r in releases)
        self.policy.observe_release(gid, [w.arrived_s for w in group], now)
        for w, r in zip(group, releases, strict=True):
            if not w.future.done():
                w.future.set_result(r)
        if self.release_log is not None:
            self.release_log.extend(releases)
        log.debug("released group %d of %d", gid, len(group))

    def _arm(self, wake_at_s: float | None, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_at_s = wake_at_s
        if wake_at_s is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, wake_at_s - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()  # if the loop fired early, the policy answers "not yet" and we re-arm

    def close(self) -> None:
        """Cancel the timer and every waiter (gateway shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            w = self._queue.popleft()
            if not w.future.done():
                w.future.cancel()
        self.metrics.queue_length = 0
