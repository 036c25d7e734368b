"""Remote / multi-node GPUs through the DCGM exporter, queried with the Prometheus HTTP API.

Instant queries (``GET {url}/api/v1/query``) read ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``
(millijoules since the driver loaded; label ``counter``). When no GPU exposes that counter the
meter falls back to ``DCGM_FI_DEV_POWER_USAGE`` (watts), integrated with the trapezoid rule over
the meter's reads (label ``polled``; read often — the timeline sampler does).

Series are deduplicated by the ``UUID`` label (several Prometheus jobs may scrape the same
exporter) and ordered by (``Hostname``, ``gpu`` index, ``UUID``); the N-th becomes domain
``gpu:N`` and the mapping is kept in :meth:`PrometheusMeter.parameters`. A counter that goes
down (exporter or driver restart) is a reset. Values only change once per scrape, so the update
period is the scrape interval (default 15 s, Prometheus' default; pass the real one).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from joulebench.errors import ConfigError, MeterUnavailable
from joulebench.meters.base import Availability, CounterAccumulator, Method, Reading

log = logging.getLogger(__name__)

ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
DEFAULT_SCRAPE_INTERVAL_S = 15.0


def _series_key(metric: Mapping[str, str]) -> tuple[str, int, str]:
    gpu = metric.get("gpu", "")
    return (
        metric.get("Hostname", metric.get("instance", "")),
        int(gpu) if gpu.isdigit() else -1,
        metric.get("UUID", ""),
    )


class PrometheusClient:
    """The few Prometheus HTTP API calls the meter needs, with errors translated."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, client: httpx.Client | None = None):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--prometheus-url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant-vector result: ``[{"metric": {...}, "value": [ts, "text"]}, ...]``."""
        try:
            response = self._client.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise MeterUnavailable(
                f"cannot reach Prometheus at {self.url} ({exc.__class__.__name__}: {exc}): "
                "check --prometheus-url and that the server is up"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if (
            response.status_code != 200
            or not isinstance(body, dict)
            or body.get("status") != "success"
        ):
            detail = body.get("error") if isinstance(body, dict) else response.text[:200]
            raise MeterUnavailable(
                f"Prometheus at {self.url} rejected {promql!r} (HTTP {response.status_code}: {detail})"
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise MeterUnavailable(
                f"Prometheus returned {data.get('resultType')!r}, expected a vector"
            )
        return list(data.get("result") or [])

    def close(self) -> None:
        self._client.close()


def dedupe_by_uuid(result: list[dict[str, Any]]) -> dict[str, float]:
    """UUID → value, one per GPU, in stable (host, gpu, UUID) order; NaN and unlabeled skipped."""
    seen: dict[str, tuple[tuple[str, int, str], float]] = {}
    for series in result:
        metric = series.get("metric") or {}
        uuid = metric.get("UUID") or metric.get("uuid")
        if not uuid:
            log.debug("skipping a DCGM series without a UUID label: %s", metric)
            continue
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not math.isfinite(value) or uuid in seen:
            continue
        seen[uuid] = (_series_key(metric), value)
    return {u: v for u, (_k, v) in sorted(seen.items(), key=lambda kv: kv[1][0])}


def probe(url: str | None, *, timeout_s: float = 2.0) -> Availability:
    if not url:
        return Availability(
            False, "no Prometheus URL given", "pass --prometheus-url http://host:9090"
        )
    try:
        meter = PrometheusMeter(url, timeout_s=timeout_s)
    except (MeterUnavailable, ConfigError) as exc:
        return Availability(False, str(exc), "run the DCGM exporter and scrape it with Prometheus")
    meter.close()
    return Availability(True, f"{len(meter.domains)} GPU(s) at {url}")


class PrometheusMeter:
    """GPU energy from DCGM exporter metrics in Prometheus (counter, else integrated power)."""

    description = "DCGM exporter through Prometheus: energy counter or integrated power"

    def __init__(
        self,
        url: str,
        *,
        selector: str = "",
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        client: httpx.Client | None = None,
        name: str = "prometheus",
    ) -> None:
        if not scrape_interval_s > 0:
            raise ConfigError(f"scrape interval must be positive, got {scrape_interval_s}")
        self.name = name
        self._clock = clock
        self._scrape_s = float(scrape_interval_s)
        self._selector = selector
        self._http = PrometheusClient(url, timeout_s=timeout_s, client=client)
        self._lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self._http.close()
            raise

    def _open(self) -> None:
        energy = dedupe_by_uuid(self._http.query(ENERGY_METRIC + self._selector))
        if energy:
            self._metric, self._method, values = ENERGY_METRIC, Method.COUNTER, energy
        else:
            power = dedupe_by_uuid(self._http.query(POWER_METRIC + self._selector))
            if not power:
                raise MeterUnavailable(
                    f"Prometheus at {self._http.url} has no {ENERGY_METRIC} or {POWER_METRIC} "
                    f"series{' for ' + self._selector if self._selector else ''}: "
                    "is the DCGM exporter scraped?"
                )
            log.info("no DCGM energy counter; integrating %s", POWER_METRIC)
            self._metric, self._method, values = POWER_METRIC, Method.POLLED, power
        self.uuids = list(values)
        self._domain_of = {u: f"gpu:{i}" for i, u in enumerate(self.uuids)}
        now = self._clock()
        self._acc = {u: CounterAccumulator(v) for u, v in values.items()}
        self._last_power = {u: (now, v) for u, v in values.items()}
        self._energy_j = dict.fromkeys(self.uuids, 0.0)

    @property
    def domains(self) -> Mapping[str, Method]:
        return {self._domain_of[u]: self._method for u in self.uuids}

    @property
    def update_period_s(self) -> float:
        return self._scrape_s

    def read(self) -> Reading:
        values = dedupe_by_uuid(self._http.query(self._metric + self._selector))
        with self._lock:
            now = self._clock()
            for uuid in self.uuids:
                if uuid not in values:
                    log.warning("DCGM series for %s disappeared; holding its last value", uuid)
                    continue
                if self._method is Method.COUNTER:
                    self._energy_j[uuid] = self._acc[uuid].update(values[uuid]) / 1000.0  # mJ → J
                else:
                    t0, p0 = self._last_power[uuid]
                    self._energy_j[uuid] += max(0.0, now - t0) * (p0 + values[uuid]) / 2
                    self._last_power[uuid] = (now, values[uuid])
            return Reading(now, {self._domain_of[u]: self._energy_j[u] for u in self.uuids})

    def close(self) -> None:
        self._http.close()

    def parameters(self) -> dict[str, object]:
        return {
            "url": self._http.url,
            "metric": self._metric,
            "selector": self._selector,
            "scrape_interval_s": self._scrape_s,
            "gpus": {self._domain_of[u]: u for u in self.uuids},
        }
