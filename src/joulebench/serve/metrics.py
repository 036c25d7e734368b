"""The server's counters, gauges and energy, as Prometheus families for ``/metrics``.

The engine updates the counters under a lock; at a scrape, :meth:`ServerMetrics.families` turns
them and the engine's reading (:class:`ServerReading`) into families that the engine's
:class:`~joulebench.exposition.Exposition` writes. The energy counters carry the meter's method
label on every sample.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from joulebench.exposition import counter, gauge, summary
from joulebench.meters.base import methods_label

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


@dataclass(frozen=True, slots=True)
class ServerReading:
    """What the engine knows at a scrape, beside the counters."""

    model: str
    scheduler: str
    queue_length: int
    running: int
    energy_j: Mapping[str, float]
    methods: Mapping[str, str]
    attributed_j: float
    busy_s: float
    busy_spans: int = 0


class ServerMetrics:
    """Thread-safe counters updated by the engine; :meth:`families` reads them at a scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (endpoint, finish reason)
        self.rejected: Counter[str] = Counter()  # reason
        self.tokens: Counter[str] = Counter()  # phase
        self.steps = 0
        self.batch_size = 0
        self.batch_size_max = 0
        self.queue_time_s_sum = 0.0
        self.queue_time_count = 0
        self.restarts = 0
        self.requeued = 0
        self.failed_by_restart = 0

    def on_step(self, batch_size: int, prefill_tokens: int, decode_tokens: int) -> None:
        with self._lock:
            self.steps += 1
            self.batch_size = batch_size
            self.batch_size_max = max(self.batch_size_max, batch_size)
            self.tokens["prefill"] += prefill_tokens
            self.tokens["decode"] += decode_tokens

    def on_idle(self) -> None:
        with self._lock:
            self.batch_size = 0

    def on_finish(self, endpoint: str, reason: str, queue_time_s: float | None) -> None:
        with self._lock:
            self.requests[(endpoint, reason)] += 1
            if queue_time_s is not None:
                self.queue_time_s_sum += queue_time_s
                self.queue_time_count += 1

    def on_restart(self, *, requeued: int, failed: int) -> None:
        with self._lock:
            self.restarts += 1
            self.requeued += requeued
            self.failed_by_restart += failed

    def on_reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def families(self, now: ServerReading) -> list[Metric]:
        """The server's metric families, every sample labelled with the model and scheduler."""
        base = {"model": now.model, "scheduler": now.scheduler}

        def one(value: float) -> list[tuple[dict[str, str], float]]:
            return [(base, value)]

        with self._lock:
            out = [
                gauge(
                    "joulebench_queue_length",
                    "Requests waiting to be scheduled.",
                    one(now.queue_length),
                ),
                gauge(
                    "joulebench_running_requests",
                    "Requests scheduled and not finished.",
                    one(now.running),
                ),
                gauge(
                    "joulebench_batch_size",
                    "Rows in the last forward step (0 when idle).",
                    one(self.batch_size),
                ),
                gauge("joulebench_batch_size_max", "Largest batch seen.", one(self.batch_size_max)),
                counter("joulebench_steps_total", "Forward steps run.", one(self.steps)),
                counter(
                    "joulebench_tokens_total",
                    "Tokens computed, by phase.",
                    [({**base, "phase": p}, self.tokens[p]) for p in ("prefill", "decode")],
                ),
                counter(
                    "joulebench_requests_total",
                    "Finished requests by endpoint and reason.",
                    [
                        ({**base, "endpoint": e, "reason": r}, n)
                        for (e, r), n in sorted(self.requests.items())
                    ],
                ),
                counter(
                    "joulebench_rejected_total",
                    "Requests refused before running.",
                    [({**base, "reason": r}, n) for r, n in sorted(self.rejected.items())],
                ),
                counter(
                    "joulebench_scheduler_restarts_total",
                    "Times the scheduler's worker died and was restarted.",
                    one(self.restarts),
                ),
                counter(
                    "joulebench_requeued_total",
                    "Requests in flight queued again after a scheduler restart.",
                    one(self.requeued),
                ),
                counter(
                    "joulebench_failed_by_restart_total",
                    "Requests in flight failed with an error by a scheduler restart.",
                    one(self.failed_by_restart),
                ),
                summary(
                    "joulebench_queue_time_seconds",
                    "Arrival to first scheduled, of requests with a queue time.",
                    self.queue_time_count,
                    self.queue_time_s_sum,
                    base,
                ),
            ]
        energy = [
            ({**base, "domain": d, "method": now.methods.get(d, "unknown")}, e)
            for d, e in sorted(now.energy_j.items())
        ]
        return [
            *out,
            counter(
                "joulebench_energy_joules_total",
                "Energy the meter read since the server started, by domain and method.",
                energy,
            ),
            counter(
                "joulebench_attributed_energy_joules_total",
                "Energy attributed to finished responses (timeline-token-work).",
                [({**base, "method": methods_label(now.methods)}, now.attributed_j)],
            ),
            counter(
                "joulebench_busy_seconds_total", "Time the model was computing.", one(now.busy_s)
            ),
            counter(
                "joulebench_busy_spans_total",
                "Separate stretches of busy time (a wait for requests ends one).",
                one(float(now.busy_spans)),
            ),
        ]
