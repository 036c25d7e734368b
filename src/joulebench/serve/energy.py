"""Per-response energy: each scheduler step's energy, shared among its requests by token work.

Schedulers report every forward step as ``(start_s, end_s, {request: tokens computed})``. While
the worker stays busy, consecutive steps abut (a step starts where the previous one ended, so the
Python overhead between forwards is part of the work); after the worker waits for requests, the
next step starts at its own start and the wait is *idle*, attributed to nobody. A step's energy
comes from the power timeline (``energy_between``), and a request receives
``step_energy × its_tokens / step_tokens`` for every step it took part in. Hence the sum over all
responses equals the timeline's energy over the busy spans, exactly up to float rounding.

Token work counts the tokens the request made the model compute in that step: its prompt
(including left padding for static batches) in prefill, one token per decode step. Rows of a
static batch that already finished still compute; their cost is shared among the rows still
running, which is what those requests really cost the machine.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from joulebench.meters.base import MeterInfo
from joulebench.meters.timeline import PowerTimeline

log = logging.getLogger(__name__)

#: Busy spans kept for inspection; a long-lived server keeps only totals for older ones (a
#: /metrics scrape read and summed the whole list under the lock the worker needs per step).
BUSY_SPANS_KEPT = 10_000

#: How per-response energy is obtained; stated in every response.
ATTRIBUTION_METHOD = "timeline-token-work"

K = TypeVar("K", bound=Hashable)


def energy_label(meter_method: str) -> str:
    """The one energy label of every response, streamed or not, OpenAI or TGI:
    ``timeline-token-work;meter=<method>`` (``x-energy-method`` header and ``energy.label``)."""
    return f"{ATTRIBUTION_METHOD};meter={meter_method}"


@dataclass(slots=True)
class _Step:
    start_s: float
    end_s: float
    work: dict[Hashable, int]
    total_work: int
    energy_j: float | None = None


@dataclass(slots=True)
class _Account:
    steps: list[_Step] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ResponseEnergy:
    """Energy attributed to one response."""

    energy_j: float
    net_energy_j: float | None
    active_s: float
    steps: int
    tokens_computed: int
    meter: MeterInfo
    idle_power_w: float | None
    span_s: float = 0.0  # first step's start to last step's end

    @property
    def meter_method(self) -> str:
        return self.meter.method_label

    @property
    def resolved(self) -> bool:
        """False when the response's steps span less than the meter's update period: its energy
        is then interpolated between at most one counter step, not resolved by the meter."""
        return self.steps > 0 and self.span_s >= self.meter.update_period_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy_j": self.energy_j,
            "net_energy_j": self.net_energy_j,
            "energy_wh": self.energy_j / 3600.0,
            "method": ATTRIBUTION_METHOD,
            "label": energy_label(self.meter_method),
            "scope": "busy steps only: idle waits between requests are attributed to no one",
            "meter": self.meter.name,
            "meter_method": self.meter_method,
            "meter_methods": dict(self.meter.methods),
            "idle_power_w": self.idle_power_w,
            "active_s": self.active_s,
            "steps": self.steps,
            "tokens_computed": self.tokens_computed,
            "span_s": self.span_s,
            "resolved": self.resolved,
            "note": self.note,
        }

    @property
    def note(self) -> str | None:
        """Why the figure is not resolved by the meter, if it is not."""
        if not self.steps:
            return "no step ran: nothing was attributed"
        if not self.resolved:
            return (
                f"steps span {self.span_s * 1e3:.3g} ms < the meter's update period "
                f"{self.meter.update_period_s * 1e3:.3g} ms: interpolated, not resolved"
            )
        return None


class EnergyLedger:
    """Thread-safe record of scheduler steps and the energy attributed to each request."""

    def __init__(
        self,
        timeline: PowerTimeline,
        meter: MeterInfo,
        *,
        idle_power_w: float | None = None,
    ) -> None:
        self.timeline = timeline
        self.meter = meter
        self.idle_power_w = idle_power_w
        self._lock = threading.Lock()
        self._accounts: dict[Hashable, _Account] = {}
        self._last_end_s: float | None = None
        self._idle = True
        # merged busy spans [start_s, end_s], the latest BUSY_SPANS_KEPT of them; the totals
        # cover every span since the server started (a scrape reads them in O(1)); a span
        # dropped from the window leaves its energy in _dropped_energy_j
        self._busy: deque[list[float]] = deque(maxlen=BUSY_SPANS_KEPT)
        self._dropped_energy_j = 0.0
        self._busy_total_s = 0.0
        self._busy_count = 0
        self.attributed_j = 0.0  # sum over finished requests
        self.responses = 0

    def open(self, key: Hashable) -> None:
        """Start an account; steps only count work of keys with an open account."""
        with self._lock:
            self._accounts.setdefault(key, _Account())

    # -- worker side -------------------------------------------------------------------------
    def mark_idle(self) -> None:
        """The worker is about to wait for requests: the next step does not abut the last one."""
        with self._lock:
            self._idle = True

    def record_step(self, start_s: float, end_s: float, work: Mapping[K, int]) -> float:
        """Record one forward step; returns the start it was booked from (abutting when busy)."""
        with self._lock:
            counted: dict[Hashable, int] = {
                k: int(w) for k, w in work.items() if w > 0 and k in self._accounts
            }
            if self._last_end_s is not None:
                # busy: abut the previous step; idle: never overlap it
                start_s = self._last_end_s if not self._idle else max(start_s, self._last_end_s)
            end_s = max(end_s, start_s)
            if self._busy and not self._idle and self._busy[-1][1] == start_s:
                self._busy_total_s += end_s - self._busy[-1][1]
                self._busy[-1][1] = end_s
            else:
                if len(self._busy) == self._busy.maxlen:
                    a, b = self._busy.popleft()  # long past: the timeline covers it
                    self._dropped_energy_j += self.timeline.energy_between(a, b)
                self._busy.append([start_s, end_s])
                self._busy_total_s += end_s - start_s
                self._busy_count += 1
            self._last_end_s = end_s
            self._idle = False
            if counted:
                step = _Step(start_s, end_s, counted, sum(counted.values()))
                for key in counted:
                    self._accounts[key].steps.append(step)
        return start_s

    # -- response side -----------------------------------------------------------------------
    def finish(self, key: Hashable) -> ResponseEnergy:
        """Close ``key``'s account and return its energy (zero if it never ran a step)."""
        self.timeline.sample_now()  # the timeline must cover the request's last step
        with self._lock:
            account = self._accounts.pop(key, None)
            steps = account.steps if account else []
            gross = net_idle = active = 0.0
            tokens = 0
            for step in steps:
                if step.energy_j is None:
                    step.energy_j = self.timeline.energy_between(step.start_s, step.end_s)
                share = step.work[key] / step.total_work
                gross += step.energy_j * share
                active += (step.end_s - step.start_s) * share
                tokens += step.work[key]
            if self.idle_power_w is not None:
                net_idle = self.idle_power_w * active
            self.attributed_j += gross
            self.responses += 1
        net = gross - net_idle if self.idle_power_w is not None else None
        span = max(st.end_s for st in steps) - min(st.start_s for st in steps) if steps else 0.0
        return ResponseEnergy(
            energy_j=gross,
            net_energy_j=net,
            active_s=active,
            steps=len(steps),
            tokens_computed=tokens,
            meter=self.meter,
            idle_power_w=self.idle_power_w,
            span_s=span,
        )

    # -- totals ------------------------------------------------------------------------------
    @property
    def open_accounts(self) -> int:
        with self._lock:
            return len(self._accounts)

    def busy_spans(self) -> list[tuple[float, float]]:
        """The latest :data:`BUSY_SPANS_KEPT` busy spans (older ones are only in the totals)."""
        with self._lock:
            return [(a, b) for a, b in self._busy]

    def busy_span_count(self) -> int:
        """Separate busy stretches since the server started."""
        with self._lock:
            return self._busy_count

    def busy_energy_j(self) -> float:
        """Timeline energy over every busy span since the server started (the total that
        responses share): the kept spans, plus what the dropped ones held when they left."""
        self.timeline.sample_now()
        with self._lock:
            dropped, spans = self._dropped_energy_j, [(a, b) for a, b in self._busy]
        return dropped + float(sum(self.timeline.energy_between(a, b) for a, b in spans))

    def busy_duration_s(self) -> float:
        """Busy seconds since the server started."""
        with self._lock:
            return self._busy_total_s
