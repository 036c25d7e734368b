"""Gateway metrics: queue length, added delay, group sizes, released/rejected counts.

Kept in plain slotted state (updated on the event loop, read by the experiment), turned into
Prometheus families at each scrape of the gateway's ``/metrics`` (:mod:`joulebench.exposition`).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from joulebench.analysis.stats import quantile
from joulebench.exposition import counter, gauge, histogram

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

PREFIX = "joulebench_gateway"

#: Upper bounds of the added-delay histogram, seconds.
DELAY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
#: Upper bounds of the group-size histogram.
GROUP_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


@dataclass(slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def family(self, name: str, help_text: str) -> Metric:
        return histogram(name, help_text, self.bounds, self.counts, self.total)


@dataclass(slots=True)
class GatewayMetrics:
    """Counters of one gateway. ``recent_delays_s`` keeps the last ``window`` delays for quantiles."""

    policy: str = ""
    upstream: str = ""
    window: int = 10_000
    queue_length: int = 0
    in_flight: int = 0
    admitted: int = 0
    released: int = 0
    rejected: int = 0
    cancelled_queued: int = 0
    client_disconnects: int = 0
    groups: int = 0
    upstream_errors: Counter[str] = field(default_factory=Counter)
    responses_by_status: Counter[int] = field(default_factory=Counter)
    delay_hist: Histogram = field(default_factory=lambda: Histogram(DELAY_BUCKETS_S))
    group_hist: Histogram = field(default_factory=lambda: Histogram(GROUP_BUCKETS))
    recent_delays_s: deque[float] = field(default_factory=deque)

    def observe_group(self, delays_s: Iterable[float]) -> None:
        ds = list(delays_s)
        self.groups += 1
        self.released += len(ds)
        self.group_hist.observe(len(ds))
        for d in ds:
            self.delay_hist.observe(d)
            self.recent_delays_s.append(d)
            if len(self.recent_delays_s) > self.window:
                self.recent_delays_s.popleft()

    @property
    def mean_group_size(self) -> float | None:
        return self.released / self.groups if self.groups else None

    def delay_quantiles_ms(self) -> dict[str, float | None]:
        xs = list(self.recent_delays_s)
        out: dict[str, float | None] = {}
        for q in QUANTILES:
            v = quantile(xs, q)
            out[f"p{round(q * 100)}"] = None if v is None else v * 1e3
        out["mean"] = (sum(xs) / len(xs) * 1e3) if xs else None
        out["max"] = max(xs) * 1e3 if xs else None
        return out

    def snapshot(self) -> dict[str, object]:
        """A JSON-able summary (the experiment stores it next to the load result)."""
        return {
            "policy": self.policy,
            "queue_length": self.queue_length,
            "in_flight": self.in_flight,
            "admitted": self.admitted,
            "released": self.released,
            "rejected": self.rejected,
            "cancelled_queued": self.cancelled_queued,
            "client_disconnects": self.client_disconnects,
            "groups": self.groups,
            "mean_group_size": self.mean_group_size,
            "added_delay_ms": self.delay_quantiles_ms(),
            "upstream_errors": dict(self.upstream_errors),
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
        }

    def _scalars(self) -> list[tuple[Callable[..., Metric], str, str, float]]:
        return [
            (gauge, "queue_length", "Requests held by the gateway, not yet released.", self.queue_length),
            (gauge, "in_flight", "Released requests still being served upstream.", self.in_flight),
            (counter, "requests_admitted_total", "Requests accepted into the queue.", self.admitted),
            (counter, "requests_released_total", "Requests released upstream.", self.released),
            (counter, "requests_rejected_total", "Requests refused with 429 (queue full).", self.rejected),
            (counter, "requests_cancelled_total", "Requests whose client left while they were queued.", self.cancelled_queued),
            (counter, "client_disconnects_total", "Clients that left after release (upstream request cancelled).", self.client_disconnects),
            (counter, "groups_total", "Release groups sent upstream.", self.groups),
        ]  # fmt: skip

    def families(self) -> list[Metric]:
        """The gateway's Prometheus families (the policy adds its own)."""
        p = PREFIX
        info = {"policy": self.policy, "upstream": self.upstream}
        xs = list(self.recent_delays_s)
        delay_q = [({"quantile": str(q)}, quantile(xs, q)) for q in QUANTILES]
        return [
            gauge(f"{p}_info", "Shaping policy and upstream of this gateway.", [(info, 1)]),
            *(
                make(f"{p}_{name}", help_text, [({}, value)])
                for make, name, help_text, value in self._scalars()
            ),
            counter(
                f"{p}_upstream_errors_total",
                "Upstream failures by kind.",
                [({"kind": k}, n) for k, n in sorted(self.upstream_errors.items())],
            ),
            counter(
                f"{p}_responses_total",
                "Responses by HTTP status.",
                [({"status": str(k)}, n) for k, n in sorted(self.responses_by_status.items())],
            ),
            self.delay_hist.family(
                f"{p}_added_delay_seconds", "Delay added by the gateway before release."
            ),
            gauge(
                f"{p}_added_delay_quantile_seconds",
                f"Added delay quantiles over the last {self.window} requests.",
                [(labels, math.nan if v is None else v) for labels, v in delay_q],
            ),
            self.group_hist.family(f"{p}_group_size", "Requests per release group."),
        ]
