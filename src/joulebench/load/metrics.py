"""Per-request records of a load test and the latency statistics derived from them.

All instants are on the runner's clock (monotonic seconds). A request's ``status`` is ``ok`` only
when its answer ended properly (a finish reason, TGI's final event with details) and, with a
forced output length, holds the tokens asked for; an answer cut short is ``truncated``, an error
``failed``, a request past its deadline ``timeout``. Only ``ok`` requests enter the latency
percentiles and get a per-request energy; the others keep their record (status, HTTP status,
error, finish reason) and are counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from joulebench.analysis.stats import quantile
from joulebench.results.load_summary import LatencySummary

OK = "ok"
FAILED = "failed"
TIMEOUT = "timeout"
TRUNCATED = "truncated"


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request (hot-path state: filled in by a protocol client)."""

    idx: int
    intended_send_s: float
    actual_send_s: float | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    status: str = FAILED
    http_status: int | None = None
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    token_source: str | None = None  # "usage", "tokenizer" or "chunks"
    finish_reason: str | None = None  # as the server said it (OpenAI finish_reason, TGI details)
    asked_tokens: int | None = None  # max_tokens sent; with a forced length, the tokens required
    chunk_times_s: list[float] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    queue_ms: float | None = None  # from the server (header) when it says
    server_energy_j: float | None = None  # from x-energy-j / usage.energy when present
    server_energy_method: str | None = None
    energy_j: float | None = None  # attributed by joulebench from the power timeline
    energy_net_j: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def lag_ms(self) -> float | None:
        if self.actual_send_s is None:
            return None
        return (self.actual_send_s - self.intended_send_s) * 1e3

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_s is None or self.actual_send_s is None:
            return None
        return (self.first_token_s - self.actual_send_s) * 1e3

    @property
    def e2e_ms(self) -> float | None:
        if self.end_s is None or self.actual_send_s is None:
            return None
        return (self.end_s - self.actual_send_s) * 1e3

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first: (end − first token) / (tokens − 1)."""
        n = self.output_tokens
        if n is None or n < 2 or self.first_token_s is None or self.end_s is None:
            return None
        return (self.end_s - self.first_token_s) * 1e3 / (n - 1)

    @property
    def itl_ms(self) -> list[float]:
        """Gaps between consecutive streamed chunks carrying text (inter-token latency)."""
        t = self.chunk_times_s
        return [(b - a) * 1e3 for a, b in itertools.pairwise(t)]

    def to_row(self) -> dict[str, object]:
        """A row for :meth:`ResultStore.add_requests` (extra keys land in its JSON column)."""
        itl = self.itl_ms
        return {
            "idx": self.idx,
            "status": self.status,
            "http_status": self.http_status,
            "error": self.error,
            "intended_send_s": self.intended_send_s,
            "actual_send_s": self.actual_send_s,
            "first_token_s": self.first_token_s,
            "end_s": self.end_s,
            "ttft_ms": self.ttft_ms,
            "tpot_ms": self.tpot_ms,
            "e2e_ms": self.e2e_ms,
            "queue_ms": self.queue_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "energy_j": self.energy_j,
            "energy_method": None,  # set by the runner with the meter's label
            "energy_net_j": self.energy_net_j,
            "lag_ms": self.lag_ms,
            "token_source": self.token_source,
            "finish_reason": self.finish_reason,
            "asked_tokens": self.asked_tokens,
            "itl_ms_mean": sum(itl) / len(itl) if itl else None,
            "server_energy_j": self.server_energy_j,
            "server_energy_method": self.server_energy_method,
        }


def latency_summary(values: Iterable[float | None]) -> LatencySummary:
    """``{p50, p90, p99, mean, n}`` over the non-``None`` values."""
    xs = [float(v) for v in values if v is not None]
    return {
        "p50": quantile(xs, 0.50),
        "p90": quantile(xs, 0.90),
        "p99": quantile(xs, 0.99),
        "mean": sum(xs) / len(xs) if xs else None,
        "n": len(xs),
    }


def in_flight_steps(records: Sequence[RequestRecord]) -> list[tuple[float, int]]:
    """(time, requests in flight just after it) at every send and completion, time-ordered."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.actual_send_s is None or r.end_s is None:
            continue
        events.append((r.actual_send_s, 1))
        events.append((r.end_s, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # completions before sends at the same instant
    steps: list[tuple[float, int]] = []
    level = 0
    for t, d in events:
        level += d
        steps.append((t, level))
    return steps
