"""Scrape an engine's ``/metrics`` at 1 Hz while a load runs: batch occupancy beside power.

Each scrape is reduced to a few quantities under one name whatever the engine calls them:

- ``running``: requests in the running batch (vLLM ``vllm:num_requests_running``, TGI
  ``tgi_batch_current_size``, SGLang ``sglang:num_running_reqs``, llama.cpp
  ``llamacpp:requests_processing``, joulebench ``joulebench_running_requests``, trtllm-serve's
  JSON ``numActiveRequests``);
- ``waiting``: requests queued (``vllm:num_requests_waiting``, ``tgi_queue_size``,
  ``sglang:num_queue_reqs``, ``llamacpp:requests_deferred``, ``joulebench_queue_length``,
  ``numQueuedRequests``);
- ``kv_cache_usage``: share of the KV cache in use, 0–1 (``vllm:gpu_cache_usage_perc`` or
  ``vllm:kv_cache_usage_perc``, ``sglang:token_usage``, ``llamacpp:kv_cache_usage_ratio``,
  trtllm ``kvCacheStats.usedNumBlocks / maxNumBlocks``);
- ``busy_s`` and ``busy_spans``: joulebench serve's ``joulebench_busy_seconds_total`` (seconds
  the model computed) and ``joulebench_busy_spans_total`` (separate stretches of them), which the
  server-energy audit needs.

The first scrape is taken when the scraper starts and the last when it stops, so counters are
read at both edges of the load. A server without ``/metrics`` gives no sample and says so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from joulebench.meters.periodic import Periodic
from joulebench.shape.upstream import metric_total, parse_prometheus

log = logging.getLogger(__name__)

#: Prometheus names per quantity, the first one present wins.
NAMES: dict[str, tuple[str, ...]] = {
    "running": (
        "vllm:num_requests_running",
        "tgi_batch_current_size",
        "sglang:num_running_reqs",
        "llamacpp:requests_processing",
        "joulebench_running_requests",
    ),
    "waiting": (
        "vllm:num_requests_waiting",
        "tgi_queue_size",
        "sglang:num_queue_reqs",
        "llamacpp:requests_deferred",
        "joulebench_queue_length",
    ),
    "kv_cache_usage": (
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
        "sglang:token_usage",
        "llamacpp:kv_cache_usage_ratio",
    ),
    "busy_s": ("joulebench_busy_seconds_total",),
    "busy_spans": ("joulebench_busy_spans_total",),
}
#: Quantities that are shares: several label sets (engines, shards) are averaged, not summed.
SHARES = frozenset({"kv_cache_usage"})


def reduce_prometheus(text: str) -> dict[str, float]:
    """The quantities of :data:`NAMES` found in a Prometheus text exposition."""
    samples = parse_prometheus(text)
    out: dict[str, float] = {}
    for key, names in NAMES.items():
        for name in names:
            total = metric_total(samples, name)
            if total is None:
                continue
            if key in SHARES:
                n = sum(1 for k in samples if k == name or k.startswith(name + "{"))
                total /= n
            out[key] = total
            break
    return out


def reduce_trtllm(stats: Any) -> dict[str, float]:
    """The quantities from trtllm-serve's JSON ``/metrics`` (a list of iteration stats, newest
    last); empty when there is none (no iteration since the last scrape)."""
    if isinstance(stats, list):
        stats = stats[-1] if stats else None
    if not isinstance(stats, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, field in (("running", "numActiveRequests"), ("waiting", "numQueuedRequests")):
        if isinstance(stats.get(field), (int, float)):
            out[key] = float(stats[field])
    kv = stats.get("kvCacheStats")
    if isinstance(kv, Mapping) and kv.get("maxNumBlocks"):
        out["kv_cache_usage"] = float(kv.get("usedNumBlocks") or 0) / float(kv["maxNumBlocks"])
    return out


def reduce_response(resp: httpx.Response) -> dict[str, float]:
    """A ``/metrics`` answer, Prometheus text or trtllm's JSON, reduced."""
    if "json" in resp.headers.get("content-type", ""):
        try:
            return reduce_trtllm(resp.json())
        except ValueError:
            return {}
    return reduce_prometheus(resp.text)


class MetricsScraper:
    """Scrape ``url + path`` every ``1/hz`` s on a daemon thread between :meth:`start` and
    :meth:`stop`; :attr:`samples` holds ``{"t_s", <quantity>: value…}`` per successful scrape."""

    def __init__(
        self,
        url: str,
        path: str = "/metrics",
        *,
        hz: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 2.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.path = path
        self.period_s = 1.0 / hz
        self.clock = clock
        self.samples: list[dict[str, float]] = []
        self.errors: dict[str, int] = {}
        self._timeout_s = timeout_s
        self._ticker: Periodic | None = None
        self._http: httpx.Client | None = None

    def scrape_once(self) -> dict[str, float] | None:
        """One scrape now; the sample, or ``None`` when the server gave nothing usable."""
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout_s, trust_env=False)
        t = self.clock()
        try:
            resp = self._http.get(self.url + self.path)
        except httpx.HTTPError as exc:
            self._count(type(exc).__name__)
            return None
        if not resp.is_success:
            self._count(f"HTTP {resp.status_code}")
            return None
        values = reduce_response(resp)
        if not values:
            self._count("no known metric")
            return None
        sample = {"t_s": t, **values}
        self.samples.append(sample)
        return sample

    def _count(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1

    def start(self) -> MetricsScraper:
        self.scrape_once()
        # a scrape that raises is logged by Periodic, counted here, and the next one goes on
        self._ticker = Periodic(
            self.scrape_once,
            self.period_s,
            name="joulebench-scrape",
            on_error=lambda exc: self._count("crash"),
        )
        self._ticker.start()
        return self

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop(self._timeout_s + self.period_s + 1.0)
            self._ticker = None
        with contextlib.suppress(Exception):
            self.scrape_once()  # the closing edge (counters read after the load)
        if self._http is not None:
            self._http.close()
            self._http = None

    def to_dict(self) -> dict[str, Any]:
        """The run's ``engine.metrics`` section."""
        keys = sorted({k for s in self.samples for k in s if k != "t_s"})
        return {
            "path": self.path,
            "hz": 1.0 / self.period_s,
            "quantities": keys,
            "samples": list(self.samples),
            "errors": dict(self.errors),
            "note": None
            if self.samples
            else f"no sample: {self.url}{self.path} gave none of the known metrics "
            f"({', '.join(f'{k} {n}×' for k, n in self.errors.items()) or 'not scraped'})",
        }

    def __enter__(self) -> MetricsScraper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
