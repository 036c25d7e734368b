"""The energy an engine reports about itself, set against the client-side meter over the same scope.

Three kinds of self-reported energy, each compared with the slice of the meter's timeline that
covers what the engine says it counted:

- ``request-span`` — TGI's ``details.energy_mj`` (GPU energy from the moment the router takes a
  request until it ends it; batch-mates' figures overlap, so their sum can exceed the window's
  energy). Reference: the sum over the same requests of the meter's GPU energy between each
  request's send and its end.
- ``window`` — trtllm-serve's ``/energy_metrics`` (cumulative GPU energy since start), read just
  before and just after the load. Reference: the meter's GPU energy between the two reads.
- ``busy-steps`` — joulebench serve's ``x-energy-j``/``usage.energy`` (``timeline-token-work``:
  forward steps shared by token work, idle waits charged to no one, so their sum is the energy
  of the server's busy seconds). Reference: the meter's mean power while requests were in
  flight × the server's busy seconds (``joulebench_busy_seconds_total`` scraped at both edges);
  without that counter, only the upper bound ``sum ≤ busy_j`` is checked.

Any other label: only the upper bound against the whole window is checked. GPU-only figures are
compared with the meter's ``gpu:*`` domains; a meter without any says the check cannot be made.
The tolerance (:data:`joulebench.analysis.audit.SERVER_ENERGY_TOLERANCE`, 10 %) is stated in the
check's detail. Both figures are quantized by counters that move once per update period: over
``k`` separate stretches of total length ``L`` a counter's energy is off by at most ``k`` steps,
a relative ``k × period / L`` at steady power. That bound, for the engine's figure and for the
reference (the engine's counter is taken to update as often as the meter's, which holds for an
engine reading the same NVML or RAPL counter), is added to the tolerance and stated, so a short
load is not failed for its counters' resolution alone; the detail shows how wide the check was,
and a verdict at ±40 % says more work is needed before it means much.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from joulebench.analysis.audit import (
    SERVER_ENERGY_TOLERANCE,
    AuditCheck,
    server_energy_agrees,
)
from joulebench.load.accounting import request_spans
from joulebench.load.clients import TGI_ENERGY_LABEL as TGI_LABEL
from joulebench.load.metrics import RequestRecord

Timeline = Sequence[tuple[float, Mapping[str, float]]]

TRTLLM_LABEL = "trtllm:/energy_metrics;gpu"
ENERGY_PATH = "/energy_metrics"

#: Key suffixes of an energy value and their factor to joules (trtllm-serve's endpoint).
_UNITS = (("_kwh", 3.6e6), ("_wh", 3600.0), ("_mj", 1e-3), ("_uj", 1e-6), ("_joules", 1.0),
          ("_j", 1.0))  # fmt: skip


def joules_in(body: Any) -> float | None:
    """Total energy in J from an ``/energy_metrics`` answer: every numeric field whose name says
    energy and carries a unit (``energy_j``, ``total_energy_mj``, …), summed over GPUs when
    the answer lists them; ``None`` when no field names its unit (a unitless number is not
    guessed at)."""
    if isinstance(body, list):
        parts = [joules_in(x) for x in body]
        found = [p for p in parts if p is not None]
        return math.fsum(found) if found else None
    if not isinstance(body, Mapping):
        return None
    for key, value in body.items():  # a total at this level wins over per-GPU details
        k = str(key).lower()
        if "energy" in k and isinstance(value, (int, float)) and not isinstance(value, bool):
            for suffix, factor in _UNITS:
                if k.endswith(suffix):
                    return float(value) * factor
    nested = [joules_in(v) for v in body.values() if isinstance(v, (Mapping, list))]
    found = [p for p in nested if p is not None]
    return math.fsum(found) if found else None


def read_energy_endpoint(
    url: str, path: str = ENERGY_PATH, *, clock: Callable[[], float] = time.monotonic
) -> dict[str, Any] | None:
    """``{"t_s", "energy_j", "raw"}`` from the engine's energy endpoint, ``None`` if it has none."""
    t = clock()
    try:
        r = httpx.get(url.rstrip("/") + path, timeout=5.0, trust_env=False)
        body = r.json() if r.is_success else None
    except (httpx.HTTPError, ValueError):
        return None
    if body is None:
        return None
    return {"t_s": t, "energy_j": joules_in(body), "raw": body}


def _domains(timeline: Timeline, gpu_only: bool) -> list[str]:
    names = sorted({d for _, e in timeline for d in e})
    return [d for d in names if d.startswith("gpu")] if gpu_only else names


def energy_between(timeline: Timeline, a: float, b: float, domains: Sequence[str]) -> float:
    """Meter energy of ``domains`` between instants ``a`` and ``b`` (linear between samples,
    clamped to the timeline's span)."""
    times = [t for t, _ in timeline]

    def at(t: float, d: str) -> float:
        i = bisect.bisect_right(times, t)
        if i == 0:
            return float(timeline[0][1].get(d, 0.0))
        if i >= len(times):
            return float(timeline[-1][1].get(d, 0.0))
        (t0, e0), (t1, e1) = timeline[i - 1], timeline[i]
        v0, v1 = float(e0.get(d, 0.0)), float(e1.get(d, 0.0))
        return v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    return math.fsum(at(b, d) - at(a, d) for d in domains)


def merged(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of ``intervals`` as disjoint sorted intervals."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _scope(label: str) -> str:
    if label.startswith("timeline-token-work"):
        return "busy-steps"
    if label == TGI_LABEL:
        return "request-span"
    if label == TRTLLM_LABEL:
        return "window"
    return "unknown"


def check(
    records: Sequence[RequestRecord],
    timeline: Timeline,
    energy: Mapping[str, Any],
    *,
    scrapes: Sequence[Mapping[str, float]] = (),
    endpoint: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    tolerance: float = SERVER_ENERGY_TOLERANCE,
    update_period_s: float = 0.0,
) -> tuple[AuditCheck, dict[str, Any]] | None:
    """The audit and the ``engine.server_energy`` section, or ``None`` when the engine reported
    no energy. ``energy`` is the load's energy block (``busy_j``, ``gross_j``);
    ``update_period_s`` is the meter's counter period (the resolution term, module docstring)."""
    if endpoint is not None and None not in (endpoint[0]["energy_j"], endpoint[1]["energy_j"]):
        before, after = endpoint
        server_j = float(after["energy_j"]) - float(before["energy_j"])
        label, n = TRTLLM_LABEL, None
    else:
        mine = [r for r in records if r.ok and r.server_energy_j is not None]
        if not mine:
            return None
        labels = sorted({r.server_energy_method or "unlabelled" for r in mine})
        label = labels[0] if len(labels) == 1 else "mixed: " + ", ".join(labels)
        server_j, n = math.fsum(float(r.server_energy_j or 0.0) for r in mine), len(mine)
    scope = _scope(label)
    block: dict[str, Any] = {"method": label, "scope": scope, "sum_j": server_j, "n": n}
    gpu_only = scope in ("request-span", "window")
    domains = _domains(timeline, gpu_only) if len(timeline) >= 2 else []
    block["meter_domains"] = domains
    if not domains:
        why = (
            "the meter measured no GPU and the engine's figure is GPU-only"
            if gpu_only
            else ("no power timeline (no meter)")
        )
        block["reference_j"] = None
        note = f"not applicable: {why}; the engine reported {server_j:.4g} J"
        return AuditCheck("engine:server_energy_vs_meter", True, note), block
    ref = _reference(scope, records, timeline, domains, energy, scrapes, endpoint)
    resolution, why = ref.resolution(update_period_s)
    block.update(
        reference_j=ref.joules, reference=ref.what, tolerance=tolerance, resolution=resolution,
        resolution_why=why,
    )  # fmt: skip
    block["ratio"] = server_j / ref.joules if ref.joules else None
    audit = server_energy_agrees(
        server_j, ref.joules, what=ref.what, tolerance=tolerance, upper_bound_only=ref.upper,
        scope="engine", resolution=resolution, resolution_why=why,
    )  # fmt: skip
    return audit, block


@dataclass(frozen=True, slots=True)
class _Reference:
    """The meter's figure for the engine's scope, and the stretches both counters were read over
    (``(count, seconds)`` for the engine's side and for the meter's)."""

    joules: float | None
    what: str
    upper: bool
    engine_stretches: tuple[int, float] | None = None
    meter_stretches: tuple[int, float] | None = None

    def resolution(self, period_s: float) -> tuple[float, str]:
        """(relative error the counters' steps alone can cause, how it was derived)."""
        if period_s <= 0:
            return 0.0, ""
        parts, total = [], 0.0
        for side, st in (("engine", self.engine_stretches), ("meter", self.meter_stretches)):
            if st is None or st[1] <= 0:
                continue
            k, seconds = st
            total += k * period_s / seconds
            parts.append(f"{side} {k} × {period_s * 1e3:.3g} ms over {seconds:.3g} s")
        return total, "; ".join(parts)


def _reference(
    scope: str,
    records: Sequence[RequestRecord],
    timeline: Timeline,
    domains: Sequence[str],
    energy: Mapping[str, Any],
    scrapes: Sequence[Mapping[str, float]],
    endpoint: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
) -> _Reference:
    gpus = f"{', '.join(domains)}"
    if scope == "window" and endpoint is not None:
        a, b = float(endpoint[0]["t_s"]), float(endpoint[1]["t_s"])
        j = energy_between(timeline, a, b, domains)
        what = f"meter {gpus} between the two /energy_metrics reads ({b - a:.3g} s)"
        return _Reference(j, what, False, (1, b - a), (1, b - a))
    if scope == "request-span":
        sent = [
            (float(r.actual_send_s), float(r.end_s))
            for r in records
            if r.ok and r.server_energy_j is not None
            and r.actual_send_s is not None and r.end_s is not None
        ]  # fmt: skip
        j = math.fsum(energy_between(timeline, a, b, domains) for a, b in sent)
        what = f"Σ meter {gpus} over each request's send→end ({len(sent)} requests)"
        each = (len(sent), math.fsum(b - a for a, b in sent))
        return _Reference(j, what, False, each, each)
    busy_j = energy.get("busy_j")
    spans = merged([(w.start_s, w.end_s) for w in request_spans(records) if w.end_s > w.start_s])
    in_flight = (len(spans), math.fsum(b - a for a, b in spans))
    if scope == "busy-steps" and busy_j:
        busy = [s["busy_s"] for s in scrapes if "busy_s" in s]
        if len(busy) >= 2 and in_flight[1] > 0:
            server_busy_s = busy[-1] - busy[0]
            in_flight_j = math.fsum(energy_between(timeline, a, b, domains) for a, b in spans)
            power_w = in_flight_j / in_flight[1]
            what = (
                f"meter power while requests were in flight ({power_w:.4g} W) × the server's busy "
                f"seconds ({server_busy_s:.4g} s, joulebench_busy_seconds_total)"
            )
            counts = [s["busy_spans"] for s in scrapes if "busy_spans" in s]
            # the server is busy only while requests are in flight: at least as many stretches
            k = int(counts[-1] - counts[0]) if len(counts) >= 2 else in_flight[0]
            return _Reference(
                power_w * server_busy_s, what, False, (max(k, 1), server_busy_s), in_flight
            )
        what = "busy_j: meter energy while a request was in flight"
        return _Reference(float(busy_j), what, True, in_flight, in_flight)
    gross = energy.get("gross_j")
    what = "gross_j: the whole load window (the engine's scope is not known)"
    return _Reference(None if gross is None else float(gross), what, True)
