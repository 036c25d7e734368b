"""What the gateway can read from the upstream's Prometheus ``/metrics``.

:func:`parse_prometheus` turns the text exposition into ``name{labels} → value``;
:func:`engine_state` reads the few gauges an adaptive policy needs (requests running, requests
waiting, rows in the current batch) under the names joulebench's server, vLLM, TGI and SGLang
use; :func:`poll_upstream` scrapes them on the gateway's event loop and hands every sample to
the policy. A server without ``/metrics`` (or with none of these names) yields nothing, and the
policy falls back on what the gateway sees itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

#: Gauge names per quantity, first found wins (joulebench serve, vLLM, TGI, SGLang).
RUNNING = (
    "joulebench_running_requests",
    "vllm:num_requests_running",
    "tgi_batch_current_size",
    "sglang:num_running_reqs",
)
WAITING = (
    "joulebench_queue_length",
    "vllm:num_requests_waiting",
    "tgi_queue_size",
    "sglang:num_queue_reqs",
)
BATCH = ("joulebench_batch_size", "tgi_batch_current_size", "vllm:num_requests_running")


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels}`` → value (labels kept verbatim); comments and bad lines skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            continue
    return out


def metric_total(samples: dict[str, float], name: str, must_contain: str = "") -> float | None:
    """Sum of ``name``'s samples over all label sets (``None`` if absent)."""
    vals = [
        v
        for k, v in samples.items()
        if (k == name or k.startswith(name + "{")) and must_contain in k
    ]
    return sum(vals) if vals else None


def _first(samples: dict[str, float], names: tuple[str, ...]) -> float | None:
    for name in names:
        v = metric_total(samples, name)
        if v is not None:
            return v
    return None


@dataclass(frozen=True, slots=True)
class EngineState:
    """One scrape, reduced: ``None`` where the server does not say."""

    t_s: float
    running: float | None
    waiting: float | None
    batch: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"running": self.running, "waiting": self.waiting, "batch": self.batch}


def engine_state(t_s: float, samples: dict[str, float]) -> EngineState | None:
    """The engine's load from parsed samples; ``None`` if it exposes none of the known gauges."""
    state = EngineState(
        t_s, _first(samples, RUNNING), _first(samples, WAITING), _first(samples, BATCH)
    )
    if state.running is None and state.waiting is None and state.batch is None:
        return None
    return state


async def poll_upstream(
    client: httpx.AsyncClient,
    upstream: str,
    on_sample: Callable[[float, dict[str, float]], None],
    *,
    interval_s: float,
    clock: Callable[[], float],
    timeout_s: float = 1.0,
) -> None:
    """Scrape ``upstream``/metrics every ``interval_s`` until cancelled.

    A server that answers 404 is not asked again (it has no metrics); network errors are
    logged once per kind of failure and retried at the next tick.
    """
    url = upstream.rstrip("/") + "/metrics"
    last_error = ""
    while True:
        try:
            resp = await client.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            if type(exc).__name__ != last_error:
                last_error = type(exc).__name__
                log.info("cannot scrape %s: %r", url, exc)
        else:
            if resp.status_code == 404:
                log.info("%s has no /metrics; the policy uses the gateway's own view", upstream)
                return
            if resp.status_code == 200:
                with contextlib.suppress(ValueError):
                    on_sample(clock(), parse_prometheus(resp.text))
        await asyncio.sleep(interval_s)
