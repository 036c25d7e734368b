"""The four energy accountings of a load test, each labelled with how it was computed.

1. ``paper_whole_window`` — the study's method: energy of the whole window ÷ successful requests.
   Idle gaps and failed requests' energy are charged to the successful ones.
2. ``idle_subtracted`` — (whole window − idle power × duration) ÷ successful requests.
3. ``steady_state`` — as ML.ENERGY does: only the window from the moment the number of requests
   in flight first reaches its plateau (the concurrency cap, or the highest level observed)
   until the last request is sent (after which the server drains). Energy per output token in that
   window (tokens spread uniformly over each request's decode span) × mean output tokens of the
   successful requests. A burst or a run too short to fill the server has no steady state: the
   result says so instead of giving a number. Only successful requests' tokens count, so energy
   that failed requests used inside the window is charged to them (as in 1.).
4. ``attributed_mean`` — per-request attribution from the power timeline
   (:func:`joulebench.analysis.attribution.attribute_energy`): slices shared among in-flight
   requests by token work, idle gaps spread in proportion, so the per-request figures (failed
   requests included) sum to the whole window; the mean is over successful requests.

Two per-request figures, two scopes — each output says which it is:

- the load generator's own (``attributed_mean``, method ``timeline-token-share``) covers the
  whole window: idle gaps are spread over the requests, so the figures sum to ``gross_j``;
- a server that reports energy per response (``server_reported``; joulebench serve's method is
  ``timeline-token-work``) charges only its busy periods, the forward steps, and gives idle waits
  to no one. Its sum is therefore at most the load's *busy* energy ``busy_j`` (the timeline's
  energy while at least one request was in flight, ``attribution.active_j``), which is itself at
  most ``gross_j``. On the embedded server, sharing the meter, ``server_reported.sum_j`` ≈
  ``busy_j`` less what the server spent outside forward steps while requests were in flight
  (HTTP, tokenization, streaming); ``server_reported.over_busy`` gives the ratio.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from joulebench.analysis.attribution import METHOD as ATTRIBUTION_METHOD
from joulebench.analysis.attribution import Attribution, WorkSpan, attribute_energy
from joulebench.analysis.audit import (
    AuditCheck,
    attribution_sum,
    energy_above_idle,
    window_long_enough,
)
from joulebench.load.metrics import RequestRecord, in_flight_steps, latency_summary

J_PER_WH = 3600.0


def _wh(j: float | None) -> float | None:
    return None if j is None else j / J_PER_WH


def _interp(series: Sequence[tuple[float, float]], t: float) -> float:
    times = [p[0] for p in series]
    i = bisect.bisect_right(times, t)
    if i == 0:
        return series[0][1]
    if i >= len(series):
        return series[-1][1]
    (t0, e0), (t1, e1) = series[i - 1], series[i]
    return e0 + (e1 - e0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)


def request_spans(records: Sequence[RequestRecord]) -> list[WorkSpan]:
    """Work spans per request: prefill (input tokens, from send + server queue time to the first
    token) and decode (output tokens, first token to end). Unknown token counts weigh 1."""
    spans: list[WorkSpan] = []
    for r in records:
        if r.actual_send_s is None or r.end_s is None:
            continue
        start = r.actual_send_s
        if r.first_token_s is None:
            spans.append(WorkSpan(r.idx, start, max(start, r.end_s), 0.0))
            continue
        if r.queue_ms:
            start = min(start + r.queue_ms / 1e3, r.first_token_s)
        first = max(start, r.first_token_s)
        spans.append(WorkSpan(r.idx, start, first, float(r.input_tokens or 1)))
        out = r.output_tokens if r.output_tokens is not None else len(r.chunk_times_s)
        spans.append(WorkSpan(r.idx, first, max(first, r.end_s), float(max(out - 1, 0))))
    return spans


#: Slack (s) allowed between the requests' span and the timeline's before clocks are called apart.
CLOCK_SLACK_S = 1.0


def clocks_aligned(
    records: Sequence[RequestRecord], series: Sequence[tuple[float, float]]
) -> AuditCheck:
    """The requests (runner's clock) must lie inside the power timeline (meter's clock).

    The timeline starts before the first send and stops after the last answer; requests outside
    it mean the two clocks differ (wall vs monotonic vs perf_counter), and every per-request
    attribution from it would be made up.
    """
    times = [t for r in records for t in (r.actual_send_s, r.end_s) if t is not None]
    if not times:
        return AuditCheck("load:clocks_aligned", True, "not applicable: no request was sent")
    lo, hi = series[0][0], series[-1][0]
    ok = min(times) >= lo - CLOCK_SLACK_S and max(times) <= hi + CLOCK_SLACK_S
    detail = (
        f"requests [{min(times):.6g}, {max(times):.6g}] s "
        f"{'inside' if ok else 'outside'} the power timeline [{lo:.6g}, {hi:.6g}] s"
    )
    if not ok:
        detail += ": the runner's clock is not the meter's (pass the meter's clock)"
    return AuditCheck("load:clocks_aligned", ok, detail)


BUSY_NOTE = (
    "timeline energy while at least one request was in flight (server queue time excluded); "
    "idle gaps are the rest of gross_j"
)
SERVER_SCOPE = (
    "the server's own per-response figures, summed over successful responses; their scope is "
    "the server's (joulebench serve: busy forward steps only, idle waits attributed to no one), "
    "so sum_j ≤ busy_j ≤ gross_j"
)


def server_reported(ok: Sequence[RequestRecord]) -> dict[str, object] | None:
    """Sum and mean of the energies the server put in its responses (None if it gave none)."""
    values = [r.server_energy_j for r in ok if r.server_energy_j is not None]
    if not values:
        return None
    methods = sorted(
        {r.server_energy_method or "unlabelled" for r in ok if r.server_energy_j is not None}
    )
    mean = sum(values) / len(values)
    return {
        "sum_j": sum(values),
        "mean_j": mean,
        "mean_wh": _wh(mean),
        "n": len(values),
        "methods": methods,
        "scope": SERVER_SCOPE,
    }


def _relate(
    block: dict[str, object] | None, gross_j: float, busy_j: float
) -> dict[str, object] | None:
    if block is None:
        return None
    total = float(block["sum_j"])  # type: ignore[arg-type]
    return {
        **block,
        "over_gross": total / gross_j if gross_j > 0 else None,
        "over_busy": total / busy_j if busy_j > 0 else None,
    }


@dataclass(frozen=True, slots=True)
class SteadyState:
    start_s: float | None
    end_s: float | None
    plateau_in_flight: int
    energy_j: float | None
    output_tokens: float
    per_request_j: float | None
    note: str

    def to_dict(self) -> dict[str, object]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": None
            if self.start_s is None or self.end_s is None
            else self.end_s - self.start_s,
            "plateau_in_flight": self.plateau_in_flight,
            "energy_j": self.energy_j,
            "output_tokens": self.output_tokens,
            "per_request_j": self.per_request_j,
            "note": self.note,
        }


def steady_state(
    records: Sequence[RequestRecord],
    series: Sequence[tuple[float, float]],
    *,
    concurrency: int | None,
    min_duration_s: float,
) -> SteadyState:
    """The steady-state window and its energy per request (see the module docstring)."""
    steps = in_flight_steps(records)
    ok = [r for r in records if r.ok and r.output_tokens]
    if not steps or not ok:
        return SteadyState(None, None, 0, None, 0.0, None, "no steady state: no completed request")
    peak = max(level for _, level in steps)
    plateau = min(concurrency, peak) if concurrency else peak
    start = next(t for t, level in steps if level >= plateau)
    sends = [r.actual_send_s for r in records if r.actual_send_s is not None]
    end = max(sends)
    source = "concurrency cap" if concurrency and plateau == concurrency else "peak in flight"
    if plateau < 2 and concurrency != 1:
        note = f"no steady state: at most {plateau} request in flight, the server never filled"
        return SteadyState(None, None, plateau, None, 0.0, None, note)
    if end - start < min_duration_s:
        note = (
            f"no steady state: the plateau of {plateau} in flight ({source}) was reached at "
            f"the last send or lasted {max(end - start, 0) * 1e3:.1f} ms < "
            f"{min_duration_s * 1e3:.0f} ms (a burst only fills and drains; sparse arrivals never fill)"
        )
        return SteadyState(None, None, plateau, None, 0.0, None, note)
    tokens = 0.0
    for r in ok:
        # tokens counted by the server's usage can come without a streamed text chunk: the
        # request's output then spreads over its whole span, from the send
        a = r.first_token_s if r.first_token_s is not None else r.actual_send_s
        b = r.end_s
        if a is None or b is None or not r.output_tokens:
            continue
        if b <= a:
            tokens += r.output_tokens if start <= a <= end else 0.0
            continue
        overlap = max(0.0, min(b, end) - max(a, start))
        tokens += r.output_tokens * overlap / (b - a)
    energy = _interp(series, end) - _interp(series, start)
    if tokens <= 0:
        note = "no steady state: no output token was generated inside the plateau window"
        return SteadyState(start, end, plateau, energy, 0.0, None, note)
    mean_out = sum(r.output_tokens or 0 for r in ok) / len(ok)
    per_request = energy / tokens * mean_out
    note = (
        f"window from reaching {plateau} in flight ({source}) to the last send; energy per "
        f"output token × mean output tokens ({mean_out:.1f})"
    )
    return SteadyState(start, end, plateau, energy, tokens, per_request, note)


def _unmeasured(idle_power_w: float | None, server_block: object) -> dict[str, object]:
    """The ``energy`` block of a load no meter measured."""
    return {
        "method": None,
        "gross_j": None,
        "net_j": None,
        "idle_power_w": idle_power_w,
        "per_request_wh": dict.fromkeys(
            ("paper_whole_window", "idle_subtracted", "steady_state", "attributed_mean")
        ),
        "attribution_sum_rel_err": None,
        "attribution_method": ATTRIBUTION_METHOD,
        "busy_j": None,
        "note": "no meter: energy was not measured",
        "server_reported": server_block,
    }


def _fill_records(
    records: Sequence[RequestRecord], attribution: Attribution, resolved: bool
) -> int:
    """Set each record's ``energy_j``/``energy_net_j`` from the attribution; the number of
    requests whose net share was at or below idle (left without a net figure)."""
    net_j = attribution.per_key_net_j or {}
    at_or_below_idle = 0
    for r in records:
        # only a request that ended properly gets a per-request figure; a net share at or
        # below zero is no energy of the request's ("≤ idle"), never stored as a number
        mine = resolved and r.ok
        r.energy_j = attribution.per_key_j.get(r.idx) if mine else None
        net_r = net_j.get(r.idx) if mine else None
        if net_r is not None and net_r <= 0:
            at_or_below_idle += 1
            net_r = None
        r.energy_net_j = net_r
    return at_or_below_idle


def _per_request_j(
    gross: float,
    net: float | None,
    n_ok: int,
    steady: SteadyState,
    attributed: list[float],
    resolved: bool,
) -> dict[str, float | None]:
    """The four accountings' energy per successful request (all ``None`` when unresolved)."""
    per_request_j = {
        "paper_whole_window": gross / n_ok if n_ok else None,
        "idle_subtracted": net / n_ok if n_ok and net is not None and net > 0 else None,
        "steady_state": steady.per_request_j,
        "attributed_mean": sum(attributed) / len(attributed) if attributed else None,
    }
    if not resolved:
        return dict.fromkeys(per_request_j)
    return per_request_j


def _accountings(
    label: str,
    n_ok: int,
    gross: float,
    net: float | None,
    idle_power_w: float | None,
    duration: float,
    steady: SteadyState,
) -> dict[str, str]:
    """How each of the four accountings was computed (or why it was not)."""
    net_above_idle = net is not None and net > 0
    return {
        "paper_whole_window": f"{label}; whole window ÷ {n_ok} successful requests (the study's)",
        "idle_subtracted": (
            "not computed: no idle baseline (pass --idle-s)"
            if idle_power_w is None or net is None
            else f"{label}; (window − {idle_power_w:.3g} W idle × {duration:.3g} s) ÷ {n_ok}"
            if net_above_idle
            else f"≤ idle: the window's energy ({gross:.4g} J) is at or below idle power × its "
            f"duration ({idle_power_w * duration:.4g} J); no per-request net figure"
        ),
        "steady_state": f"{label}; {steady.note}",
        "attributed_mean": f"{label}; {ATTRIBUTION_METHOD}, mean over successful requests; "
        "idle gaps spread over requests",
    }


def account(
    records: Sequence[RequestRecord],
    series: Sequence[tuple[float, float]] | None,
    *,
    idle_power_w: float | None,
    meter_label: str | None,
    concurrency: int | None,
    min_window_s: float,
    update_period_s: float = 0.0,
) -> dict[str, object]:
    """The ``energy`` block of a load result; fills ``energy_j``/``energy_net_j`` on records."""
    ok = [r for r in records if r.ok]
    server_block = server_reported(ok)
    if series is None or len(series) < 2:
        return _unmeasured(idle_power_w, server_block)
    gross = series[-1][1] - series[0][1]
    duration = series[-1][0] - series[0][0]
    net = None if idle_power_w is None else gross - idle_power_w * duration
    n_ok = len(ok)
    attribution = attribute_energy(series, request_spans(records), idle_power_w=idle_power_w)
    # a window shorter than the meter's update period holds zero or one counter step, and
    # requests on another clock than the meter's fall anywhere on it: a per-request figure would
    # be an artefact, so none is given, not in the summary and not on the records (stored rows,
    # shape-compare's net mean, CIs); the two audits say why
    window = window_long_enough(duration, update_period_s, scope="load")
    aligned = clocks_aligned(records, series)
    resolved = window.passed and aligned.passed
    at_or_below_idle = _fill_records(records, attribution, resolved)
    attributed = [r.energy_j for r in ok if r.energy_j is not None]
    # what the requests that did not end properly drew: part of the total, nobody's figure
    not_ok_j = (
        math.fsum(attribution.per_key_j.get(r.idx, 0.0) for r in records if not r.ok)
        if resolved
        else None
    )
    steady = steady_state(records, series, concurrency=concurrency, min_duration_s=min_window_s)
    label = meter_label or "unknown"
    net_above_idle = net is not None and net > 0
    per_request_j = _per_request_j(gross, net, n_ok, steady, attributed, resolved)
    checks = [
        energy_above_idle(
            gross,
            idle_power_w,
            duration,
            scope="load",
            resolution_j=(idle_power_w or 0.0) * update_period_s,
        ),
        window,
        attribution_sum(attribution.per_key_j.values(), gross, rel_tol=0.01, scope="load"),
        aligned,
    ]
    return {
        "audits": [c.to_dict() for c in checks],
        "method": label,
        "gross_j": gross,
        "net_j": net,
        "idle_power_w": idle_power_w,
        "window_s": duration,
        "successful_requests": n_ok,
        "net_at_or_below_idle": not net_above_idle if net is not None else None,
        "requests_net_at_or_below_idle": at_or_below_idle,
        "not_ok_share_j": not_ok_j,
        "per_request_j": per_request_j,
        "per_request_wh": {k: _wh(v) for k, v in per_request_j.items()},
        # the spread behind ``attributed_mean``: a mean alone hides a long tail of costly requests
        "attributed_spread_j": latency_summary(attributed),
        "accountings": _accountings(label, n_ok, gross, net, idle_power_w, duration, steady),
        "steady_state": steady.to_dict(),
        "attribution": attribution.to_dict(),
        "attribution_sum_rel_err": attribution.sum_rel_err,
        "attribution_method": ATTRIBUTION_METHOD,
        "busy_j": attribution.active_j,
        "busy_note": BUSY_NOTE,
        "server_reported": _relate(server_block, gross, attribution.active_j),
        "note": _note(n_ok, window, aligned),
    }


def _note(n_ok: int, window: AuditCheck, aligned: AuditCheck) -> str | None:
    """Why the load result has no per-request energy, if it has none."""
    if not n_ok:
        return "no successful request: per-request energy undefined"
    if not aligned.passed:
        return f"{aligned.detail}: no per-request figure"
    if not window.passed:
        return (
            f"{window.detail}: energy not resolved, no per-request figure (send more requests "
            "or use a meter that updates faster)"
        )
    return None
