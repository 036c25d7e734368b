"""Remote / multi-node GPUs through the DCGM exporter, queried with the Prometheus HTTP API.

Instant queries (``GET {url}/api/v1/query``) read ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``
(millijoules since the driver loaded; label ``counter``). When no GPU exposes that counter the
meter falls back to ``DCGM_FI_DEV_POWER_USAGE`` (watts), integrated with the trapezoid rule over
the meter's reads (label ``polled``; read often — the timeline sampler does).

Which GPUs: ``gpus`` takes the same list as ``--gpus`` (``gpu`` index labels or ``UUID``s /
unique prefixes); ``selector`` is any PromQL label selector (``{Hostname="node1"}``). An index
matches that index on every host the selector keeps: for a multi-node engine use UUIDs or pick
the host with the selector. With neither, every GPU the exporter reports is measured and a warning
lists them. Under MIG the exporter repeats a GPU's device-level energy counter on each instance's
series (labels ``GPU_I_ID``/``GPU_I_PROFILE``); summing them would count the GPU once per
instance, so the GPU is counted once (by UUID) and a warning says that the figure covers the whole
GPU, other instances' work included.

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
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from joulebench.errors import ConfigError, JoulebenchWarning, MeterUnavailable
from joulebench.meters.base import Availability, CounterAccumulator, Method, Reading
from joulebench.meters.gpus import parse_gpu_list

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


def _uuid(metric: Mapping[str, str]) -> str | None:
    return metric.get("UUID") or metric.get("uuid")


def select_series(result: list[dict[str, Any]], gpus: Sequence[str] | None) -> list[dict[str, Any]]:
    """The series of the GPUs ``gpus`` names (``gpu`` index label or UUID prefix); all if none.

    An entry that matches no series is a :class:`ConfigError` listing what the exporter reports.
    """
    if not gpus:
        return result
    kept: list[dict[str, Any]] = []
    for entry in gpus:
        key = entry.lower() if entry.upper().startswith("GPU-") else f"gpu-{entry.lower()}"

        def hit(series: dict[str, Any], entry: str = entry, key: str = key) -> bool:
            metric = series.get("metric") or {}
            if entry.isdigit():
                return metric.get("gpu") == entry
            return (_uuid(metric) or "").lower().startswith(key)

        found = [x for x in result if hit(x)]
        if not found:
            seen = sorted(
                {
                    f"gpu {m.get('gpu', '?')} {_uuid(m)}"
                    for x in result
                    if (m := x.get("metric") or {})
                }
            )
            raise ConfigError(
                f"--gpus entry {entry!r} matches no DCGM series; the exporter reports "
                f"{', '.join(seen) or 'none'}"
            )
        kept.extend(x for x in found if x not in kept)
    return kept


def mig_instances(result: list[dict[str, Any]]) -> dict[str, list[str]]:
    """GPU UUID → the MIG instance ids (``GPU_I_ID``) whose series repeat its counter."""
    out: dict[str, set[str]] = {}
    for series in result:
        metric = series.get("metric") or {}
        uuid, instance = _uuid(metric), metric.get("GPU_I_ID")
        if uuid and instance not in (None, ""):
            out.setdefault(uuid, set()).add(str(instance))
    return {u: sorted(ids) for u, ids in out.items()}


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
        gpus: str | Sequence[str | int] | None = None,
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
        self._gpus = parse_gpu_list(gpus)
        self._http = PrometheusClient(url, timeout_s=timeout_s, client=client)
        self._lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self._http.close()
            raise

    def _query(self, metric: str) -> list[dict[str, Any]]:
        return self._http.query(metric + self._selector)

    def _open(self) -> None:
        raw = self._query(ENERGY_METRIC)
        energy = dedupe_by_uuid(select_series(raw, self._gpus)) if raw else {}
        if energy:
            self._metric, self._method, values = ENERGY_METRIC, Method.COUNTER, energy
        else:
            raw = self._query(POWER_METRIC)
            power = dedupe_by_uuid(select_series(raw, self._gpus)) if raw else {}
            if not power:
                raise MeterUnavailable(
                    f"Prometheus at {self._http.url} has no {ENERGY_METRIC} or {POWER_METRIC} "
                    f"series{' for ' + self._selector if self._selector else ''}: "
                    "is the DCGM exporter scraped?"
                )
            log.info("no DCGM energy counter; integrating %s", POWER_METRIC)
            self._metric, self._method, values = POWER_METRIC, Method.POLLED, power
        self.uuids = list(values)
        self.mig = {u: ids for u, ids in mig_instances(raw).items() if u in values and len(ids)}
        for uuid, ids in self.mig.items():
            warnings.warn(
                f"DCGM reports MIG instances {', '.join(ids)} of GPU {uuid}: their series repeat "
                "the whole GPU's energy counter, so it is counted once and covers every "
                "instance's work, not only the measured one",
                JoulebenchWarning,
                stacklevel=4,
            )
        if not self._gpus and not self._selector and len(values) > 1:
            log.warning(
                "prometheus measures all %d GPUs the exporter reports (%s): nothing chose them. "
                "Pass --gpus or --prometheus-selector",
                len(values),
                ", ".join(values),
            )
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
        values = dedupe_by_uuid(self._query(self._metric))
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
            "gpu_selection": "--gpus"
            if self._gpus
            else self._selector or "all GPUs (nothing chosen)",
            "gpus_requested": self._gpus,
            "mig_instances": self.mig,
            "scrape_interval_s": self._scrape_s,
            "gpus": {self._domain_of[u]: u for u in self.uuids},
        }
