"""Gateway metrics: queue length, added delay, group sizes, released/rejected counts.

Kept in plain slotted state (updated on the event loop, read by ``/metrics`` and by the
experiment), rendered as Prometheus text exposition format 0.0.4 without a client library.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from joulebench.analysis.stats import quantile

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

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cum = 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            cum += c
            lines.append(f'{name}_bucket{{le="{_num(bound)}"}} {cum}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.n}')
        lines.append(f"{name}_sum {_num(self.total)}")
        lines.append(f"{name}_count {self.n}")
        return lines


def _num(x: float) -> str:
    return repr(float(x))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


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

    def render(self) -> str:
        """Prometheus text exposition."""
        p = PREFIX
        lines = [
            f"# HELP {p}_info Shaping policy and upstream of this gateway.",
            f"# TYPE {p}_info gauge",
            f'{p}_info{{policy="{_escape(self.policy)}",upstream="{_escape(self.upstream)}"}} 1',
        ]

        def scalar(name: str, kind: str, help_text: str, value: float) -> None:
            lines.extend(
                [
                    f"# HELP {p}_{name} {help_text}",
                    f"# TYPE {p}_{name} {kind}",
                    f"{p}_{name} {value}",
                ]
            )

        scalar(
            "queue_length",
            "gauge",
            "Requests held by the gateway, not yet released.",
            self.queue_length,
        )
        scalar(
            "in_flight", "gauge", "Released requests still being served upstream.", self.in_flight
        )
        scalar(
            "requests_admitted_total", "counter", "Requests accepted into the queue.", self.admitted
        )
        scalar("requests_released_total", "counter", "Requests released upstream.", self.released)
        scalar(
            "requests_rejected_total",
            "counter",
            "Requests refused with 429 (queue full).",
            self.rejected,
        )
        scalar(
            "requests_cancelled_total", "counter",
            "Requests whose client left while they were queued.", self.cancelled_queued,
        )  # fmt: skip
        scalar(
            "client_disconnects_total", "counter",
            "Clients that left after release (upstream request cancelled).", self.client_disconnects,
        )  # fmt: skip
        scalar("groups_total", "counter", "Release groups sent upstream.", self.groups)
        lines.append(f"# HELP {p}_upstream_errors_total Upstream failures by kind.")
        lines.append(f"# TYPE {p}_upstream_errors_total counter")
        for kind, n in sorted(self.upstream_errors.items()):
            lines.append(f'{p}_upstream_errors_total{{kind="{_escape(kind)}"}} {n}')
        lines.append(f"# HELP {p}_responses_total Responses by HTTP status.")
        lines.append(f"# TYPE {p}_responses_total counter")
        for status, n in sorted(self.responses_by_status.items()):
            lines.append(f'{p}_responses_total{{status="{status}"}} {n}')
        lines += self.delay_hist.render(
            f"{p}_added_delay_seconds", "Delay added by the gateway before release."
        )
        lines.append(
            f"# HELP {p}_added_delay_quantile_seconds Added delay quantiles over the last "
            f"{self.window} requests."
        )
        lines.append(f"# TYPE {p}_added_delay_quantile_seconds gauge")
        xs = list(self.recent_delays_s)
        for q in QUANTILES:
            v = quantile(xs, q)
            lines.append(
                f'{p}_added_delay_quantile_seconds{{quantile="{q}"}} {"NaN" if v is None else repr(v)}'
            )
        lines += self.group_hist.render(f"{p}_group_size", "Requests per release group.")
        return "\n".join(lines) + "\n"
