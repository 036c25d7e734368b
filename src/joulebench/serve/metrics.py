"""Prometheus text exposition (format 0.0.4) of the server's counters, gauges and energy.

Written by hand rather than with ``prometheus_client``: a dozen series do not justify a
dependency, and the energy counters must carry the meter's method label on every sample.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

from joulebench.meters.base import methods_label

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    parts = []
    for k, v in sorted(labels.items()):
        escaped = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{escaped}"')
    return "{" + ",".join(parts) + "}"


class ServerMetrics:
    """Thread-safe counters updated by the engine; :meth:`render` formats a scrape."""

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

    def render(
        self,
        *,
        model: str,
        scheduler: str,
        queue_length: int,
        running: int,
        energy_j: Mapping[str, float],
        methods: Mapping[str, str],
        attributed_j: float,
        busy_s: float,
    ) -> str:
        base = {"model": model, "scheduler": scheduler}
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{_labels({**base, **labels})} {float(value)!r}")

        with self._lock:
            metric(
                "joulebench_queue_length",
                "gauge",
                "Requests waiting to be scheduled.",
                [({}, queue_length)],
            )
            metric(
                "joulebench_running_requests",
                "gauge",
                "Requests scheduled and not finished.",
                [({}, running)],
            )
            metric(
                "joulebench_batch_size",
                "gauge",
                "Rows in the last forward step (0 when idle).",
                [({}, self.batch_size)],
            )
            metric(
                "joulebench_batch_size_max",
                "gauge",
                "Largest batch seen.",
                [({}, self.batch_size_max)],
            )
            metric("joulebench_steps_total", "counter", "Forward steps run.", [({}, self.steps)])
            metric(
                "joulebench_tokens_total",
                "counter",
                "Tokens computed, by phase.",
                [({"phase": p}, self.tokens[p]) for p in ("prefill", "decode")],
            )
            metric(
                "joulebench_requests_total",
                "counter",
                "Finished requests by endpoint and reason.",
                [({"endpoint": e, "reason": r}, n) for (e, r), n in sorted(self.requests.items())],
            )
            metric(
                "joulebench_rejected_total",
                "counter",
                "Requests refused before running.",
                [({"reason": r}, n) for r, n in sorted(self.rejected.items())],
            )
            metric(
                "joulebench_scheduler_restarts_total",
                "counter",
                "Times the scheduler's worker died and was restarted.",
                [({}, self.restarts)],
            )
            metric(
                "joulebench_requeued_total",
                "counter",
                "Requests in flight queued again after a scheduler restart.",
                [({}, self.requeued)],
            )
            metric(
                "joulebench_failed_by_restart_total",
                "counter",
                "Requests in flight failed with an error by a scheduler restart.",
                [({}, self.failed_by_restart)],
            )
            metric(
                "joulebench_queue_time_seconds_sum",
                "counter",
                "Arrival to first scheduled.",
                [({}, self.queue_time_s_sum)],
            )
            metric(
                "joulebench_queue_time_seconds_count",
                "counter",
                "Requests with a queue time.",
                [({}, self.queue_time_count)],
            )
        metric(
            "joulebench_energy_joules_total",
            "counter",
            "Energy the meter read since the server started, by domain and method.",
            [
                ({"domain": d, "method": methods.get(d, "unknown")}, e)
                for d, e in sorted(energy_j.items())
            ],
        )
        method = methods_label(methods)
        metric(
            "joulebench_attributed_energy_joules_total",
            "counter",
            "Energy attributed to finished responses (timeline-token-work).",
            [({"method": method}, attributed_j)],
        )
        metric(
            "joulebench_busy_seconds_total",
            "counter",
            "Time the model was computing.",
            [({}, busy_s)],
        )
        return "\n".join(lines) + "\n"
