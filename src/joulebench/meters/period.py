"""Measure how often a hardware counter really updates, instead of assuming 100 ms.

NVIDIA's energy counter refreshes every 20–100 ms depending on the GPU and driver; a window
shorter than that can miss every update, and each window edge is uncertain by one update's worth
of energy. :func:`measure_update_period` polls a set of counters until each has changed a few
times, within a bounded time, and returns the median interval between changes.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Changes per counter to wait for: ``CHANGES - 1`` intervals between them are measured.
CHANGES = 4
POLL_S = 0.002
TIMEOUT_S = 1.5


@dataclass(frozen=True, slots=True)
class UpdatePeriod:
    """Per counter, the median interval between changes (``None``: fewer than two changes seen)."""

    periods_s: tuple[float | None, ...]
    poll_s: float
    elapsed_s: float

    @property
    def period_s(self) -> float | None:
        """The slowest counter's period (a window must cover it), ``None`` if none was measured."""
        known = [p for p in self.periods_s if p is not None]
        return max(known) if known else None

    @property
    def complete(self) -> bool:
        return all(p is not None for p in self.periods_s)

    def to_dict(self) -> dict[str, object]:
        return {
            "periods_s": list(self.periods_s),
            "poll_s": self.poll_s,
            "elapsed_s": self.elapsed_s,
        }


def measure_update_period(
    read: Callable[[], Sequence[float]],
    *,
    changes: int = CHANGES,
    poll_s: float = POLL_S,
    timeout_s: float = TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> UpdatePeriod:
    """Poll ``read()`` (one raw value per counter) every ``poll_s`` until every counter changed
    ``changes`` times or ``timeout_s`` passed; per counter, the median interval between changes.

    The first change only marks a start (when the update before it happened is unknown). Each
    change is seen up to ``poll_s`` late, so a period is known to about ± ``poll_s``.
    """
    if changes < 2:
        raise ValueError(f"need at least two changes to measure an interval, got {changes}")
    start = clock()
    last = list(read())
    edges: list[list[float]] = [[] for _ in last]
    while True:
        sleep(poll_s)
        now = clock()
        values = list(read())
        for i, (old, new) in enumerate(zip(last, values, strict=True)):
            if new != old:
                edges[i].append(now)
        last = values
        if all(len(e) >= changes for e in edges) or now - start >= timeout_s:
            break
    periods = tuple(
        statistics.median(b - a for a, b in itertools.pairwise(e)) if len(e) >= 2 else None
        for e in edges
    )
    result = UpdatePeriod(periods, poll_s, clock() - start)
    if not result.complete:
        log.info(
            "update period: %d of %d counters changed fewer than twice in %.2f s",
            sum(p is None for p in periods),
            len(periods),
            timeout_s,
        )
    return result
