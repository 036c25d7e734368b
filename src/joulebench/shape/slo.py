"""``slo:BUDGET``: arrival shaping that tunes itself to a latency budget.

The user states how much time-to-first-token the gateway may add (``slo:500ms``) instead of a
period or a window. For every decision the policy answers "release now, or hold until when?"
from three online estimates (:mod:`joulebench.shape.slo_model`):

- the arrival rate λ (the last arrivals, decaying through silence);
- what a request costs upstream as a function of how many run beside it: busy seconds per
  request ``c(b) = D(b) / b`` with ``D(b) = d0 + d1·b`` fitted to the gateway's own timings of
  responses (release → last byte) against the concurrency each one saw; where the upstream
  reports each response's energy (``x-energy-j``, ``usage.energy``, ``energy_mj``), joules per
  request fitted the same way take over as the cost (``model.basis`` says which);
- how much a group of ``g`` delays its own first token (release → first byte, fitted on ``g``).

The rule, for a queue of ``q`` requests whose oldest arrived at ``a0``, with ``r`` requests
already running upstream (the upstream's ``/metrics`` when fresh, else the gateway's count):

1. ``now ≥ a0 + budget − guard``: release (the hard bound; nobody waits longer).
2. estimates unusable (too few arrivals or responses, upstream failing): release (passthrough).
3. the upstream has had requests waiting for two scrapes in a row, or the arrival rate is
   at least :data:`SATURATION` of its capacity ``1 / d1`` (the throughput ``b / D(b)``
   approaches as the batch grows): release (it is saturated, or nearly, and batches them
   anyway; a held group's burst would leave a backlog the arrivals keep from clearing).
4. ``q + r ≥ target``, the batch past which one more row saves less than ``gain_floor`` of the
   energy per request, and never more than twice the largest batch seen so far
   (:meth:`CostModel.reach <joulebench.shape.slo_model.CostModel.reach>`): release (holding
   cannot lower it further, or not by anything measured).
5. the hold left is the budget minus the larger of the predicted first-token penalty of the
   bigger group, the upstream's recent first-token p99 beyond a lone request's, and — while
   fewer than :data:`MIN_TTFTS` first tokens have been seen — :data:`COLD_RESERVE` of the
   budget; if
   the expected relative saving over that hold, ``1 − E[c(q + r + N)] / c(q + r)`` with
   ``N ~ Poisson(λ·hold)``, is below ``gain_floor``: release (holding cannot help: too few
   arrivals expected, or batching does not pay on this upstream — recorded as ``no gain``; or
   less than a tenth of the budget was left to hold — recorded as ``budget``).
6. otherwise hold until the target is expected to fill or the hold runs out, whichever is
   first; every arrival and every wake-up decides again with fresh estimates.

So the hold shrinks as the rate rises (the target fills sooner, then the upstream is busy), and
at low rates the policy stops holding once the requests it would wait for are unlikely to come.
Each release is recorded (:class:`ReleaseRecord`): group size, delay added, why, the batch it
predicted and the batch it got; ``explain()`` and ``metric_families()`` carry them to the run
record and to ``/metrics``. The policy reads no clock and draws no random numbers: every time
comes from its caller, so tests drive it with scripted times.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from joulebench.analysis.stats import quantile
from joulebench.errors import ConfigError, at_least
from joulebench.exposition import counter, gauge
from joulebench.shape.policies import EPS_S, Decision, Policy, ResponseEvent
from joulebench.shape.slo_model import CostModel, Health, RateEstimator
from joulebench.shape.upstream import EngineState, engine_state
from joulebench.units import parse_duration_s

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: Releases kept for ``explain()`` (the run record) and shown on ``/metrics`` (the latest).
LEDGER = 10_000
METRICS_RELEASES = 32
#: An upstream scrape older than this is not trusted for "running"/"waiting".
FRESH_S = 1.0
#: Above this share of the upstream's capacity (1 / d1 req/s) the policy never holds: near
#: capacity batches fill by themselves, and a held group's burst leaves a backlog that
#: arrivals keep from clearing (on the CPU at 30 req/s, ~90 % of it: TTFT p99 0.6–1.5 s).
SATURATION = 0.7
#: Recent first-token times kept for the upstream's p99, and how many before it is used.
TTFT_WINDOW = 200
MIN_TTFTS = 8
#: Share of the budget kept back while fewer than MIN_TTFTS first tokens have been seen: the
#: first-token model knows nothing yet of what a group costs its own first token (on the CPU
#: at 30 req/s a cold gateway's first holds of ~440 ms, with nothing reserved, put a whole
#: group's TTFT past the budget).
COLD_RESERVE = 0.5


@dataclass(slots=True)
class ReleaseRecord:
    """One release, explained. Times are seconds since the gateway started."""

    group: int
    released_s: float
    size: int
    delay_max_ms: float
    delay_mean_ms: float
    reason: str
    rate_rps: float | None
    upstream_running: float
    target_batch: int | None
    predicted_batch: float
    realised_batch: float | None = None  # mean concurrency its requests saw upstream
    upstream_batch: float | None = None  # mean of the upstream's own batch gauge meanwhile
    answered: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class _Verdict:
    reason: str
    predicted_batch: float
    target: int | None


@dataclass(slots=True)
class _Open:
    """A released group whose responses are not all in yet."""

    record: ReleaseRecord
    released_s: float
    area0: float
    batch_sum: float = 0.0
    batch_n: int = 0


class SloPolicy(Policy):
    """Hold requests only while that is expected to save energy; never beyond ``budget_s``."""

    kind = "slo"
    #: 4 Hz: a scrape costs the upstream ~2.5 ms of CPU (joulebench serve on the 2-core VM);
    #: at 10 Hz that was ~5 % of the energy of a tiny model's request at 10 req/s
    metrics_interval_s: float | None = 0.25

    def __init__(
        self,
        budget_s: float,
        *,
        max_batch: int = 32,
        max_delay_s: float | None = None,
        gain_floor: float = 0.02,
        min_arrivals: int = 4,
        min_responses: int = 2,
        guard_s: float | None = None,
    ) -> None:
        super().__init__(max_delay_s=max_delay_s)
        if not math.isfinite(budget_s) or budget_s <= 0:
            raise ConfigError(f"slo budget must be positive, got {budget_s * 1e3:g} ms")
        at_least(max_batch, 1, "slo max batch")
        if not 0 < gain_floor < 1:
            raise ConfigError(f"slo gain floor must be in (0, 1), got {gain_floor}")
        self.budget_s = budget_s
        self.max_batch = max_batch
        self.gain_floor = gain_floor
        self.min_responses = min_responses
        # timer and event-loop jitter: release this much before the bound (≤ 5 % of it)
        self.guard_s = min(0.02, 0.05 * budget_s) if guard_s is None else guard_s
        self.rate = RateEstimator(min_arrivals=min_arrivals)
        self.cost = CostModel()
        self.health = Health()
        self.engine: EngineState | None = None
        self.decisions: Counter[str] = Counter()
        self.releases: deque[ReleaseRecord] = deque(maxlen=LEDGER)
        self._open: dict[int, _Open] = {}
        self._verdict: _Verdict | None = None
        self._in_flight = 0
        self._area = 0.0  # ∫ in-flight dt: mean concurrency over any interval
        self._area_t: float | None = None
        self._waiting_scrapes = 0  # consecutive scrapes with requests waiting upstream
        # release → first byte of the recent responses: what the upstream really added beyond
        # a lone request's first token (its queue, a congested batch), whatever the model says
        self._ttfts: deque[float] = deque(maxlen=TTFT_WINDOW)

    # -- the decision --------------------------------------------------------------------------
    def _decide(self, waiting_s: Sequence[float], now_s: float) -> Decision:
        q = len(waiting_s)
        hard = waiting_s[0] + self.budget_s - self.guard_s
        if now_s + EPS_S >= hard:
            return self._release(q, "budget: the oldest request reached the bound", q, None)
        why = self.unusable(now_s)
        if why is not None:
            return self._release(q, f"passthrough: {why}", q, None)
        running, waiting = self._upstream_load(now_s)
        b_now = q + running
        if waiting > 0:
            return self._release(q, f"upstream busy: {waiting:g} waiting there", b_now, None)
        rate = self.rate.rate_rps(now_s) or 0.0
        capacity = self.cost.capacity_rps()
        if rate >= SATURATION * capacity:
            reason = (
                f"near capacity: {rate:.3g} req/s ≥ {SATURATION:.0%} of the upstream's "
                f"{capacity:.3g} req/s"
            )
            return self._release(q, reason, b_now, None)
        target = self.cost.target_batch(self.gain_floor, self.max_batch)
        if b_now >= target:
            return self._release(q, "target batch reached", b_now, target)
        room_s = hard - now_s
        # the bigger group, and the bigger batch it makes upstream, delay its own first token
        # beyond what direct sending would get: keep that inside the budget too
        g_max = min(q + rate * room_s, float(self.max_batch))
        penalty_s = self.cost.ttft_penalty_s(g_max, running, self.cost.running_direct(rate))
        hold_s = room_s - max(penalty_s, self.upstream_extra_ttft_s(), self._cold_reserve_s())
        if hold_s <= EPS_S:
            return self._release(
                q, "budget: no hold left after the first-token penalty", b_now, target
            )
        to_target_s = (target - b_now) / rate if rate > 0 else math.inf
        budget_bound = hold_s <= to_target_s
        hold_s = min(hold_s, to_target_s)
        gain = self.cost.expected_gain(b_now, rate * hold_s, self.max_batch)
        if gain < self.gain_floor:
            # the budget, not the data, left too little hold to gain from: say so
            kind = "budget" if budget_bound and hold_s < 0.1 * self.budget_s else "no gain"
            reason = f"{kind}: holding {hold_s * 1e3:.0f} ms expected to save {gain * 100:.1f} %"
            return self._release(q, reason, b_now, target)
        self._verdict = _Verdict("hold", b_now + rate * hold_s, target)
        return Decision(0, now_s + max(hold_s, EPS_S))

    def _release(self, q: int, reason: str, predicted: float, target: int | None) -> Decision:
        self._verdict = _Verdict(reason, predicted, target)
        return Decision(q, None)

    def upstream_extra_ttft_s(self) -> float:
        """How much later than a lone request the upstream has been giving first tokens, at
        the p99: the 99th percentile of release → first byte over the last
        :data:`TTFT_WINDOW` responses minus the fitted lone-request time. A hold leaves room
        for it too, so when the upstream is congested (a queue, batches whose steps crawl)
        holds shrink to nothing and the policy sends as it receives, instead of adding its
        hold on top (on the CPU at 30 req/s: 0.5–1.1 s of added TTFT p99 with holds < 0.5 s)."""
        if len(self._ttfts) < MIN_TTFTS:
            return 0.0
        p99 = quantile(list(self._ttfts), 0.99) or 0.0
        fit = self.cost.ttft.coefficients()
        lone = max(fit[0], 0.0) if fit is not None else min(self._ttfts)
        return max(0.0, p99 - lone)

    def _cold_reserve_s(self) -> float:
        """:data:`COLD_RESERVE` of the budget while the first-token data are too few."""
        return COLD_RESERVE * self.budget_s if len(self._ttfts) < MIN_TTFTS else 0.0

    def unusable(self, now_s: float) -> str | None:
        """Why the estimates cannot be trusted now (``None``: they can)."""
        failing = self.health.failing()
        if failing:
            return failing
        if self.rate.rate_rps(now_s) is None:
            return f"too few arrivals ({self.rate.recent(now_s)}/{self.rate.min_arrivals})"
        if self.cost.n_responses < self.min_responses:
            return f"too few responses ({self.cost.n_responses}/{self.min_responses})"
        if not self.cost.usable():
            return "no usable cost estimate"
        return None

    def _upstream_load(self, now_s: float) -> tuple[float, float]:
        """(running, waiting) upstream: its own gauges if fresh, else the gateway's count."""
        e = self.engine
        if e is not None and now_s - e.t_s <= FRESH_S:
            running = e.running if e.running is not None else float(self._in_flight)
            # a queue seen once may be our own group not yet scheduled; seen twice, it is real
            waiting = (e.waiting or 0.0) if self._waiting_scrapes >= 2 else 0.0
            # requests released since the scrape are not in it yet
            return max(running, float(self._in_flight)), waiting
        return float(self._in_flight), 0.0

    def _own_bound_s(self) -> float | None:
        return self.budget_s

    def spec(self) -> str:
        extra = "" if self.max_batch == 32 else f",{self.max_batch}"
        return f"slo:{self.budget_s * 1e3:g}ms{extra}"

    # -- feedback ------------------------------------------------------------------------------
    def _advance(self, t_s: float) -> None:
        if self._area_t is not None and t_s > self._area_t:
            self._area += self._in_flight * (t_s - self._area_t)
        self._area_t = t_s if self._area_t is None else max(self._area_t, t_s)

    def observe_arrival(self, t_s: float) -> None:
        self.rate.observe(t_s)

    def observe_release(self, group: int, arrivals_s: Sequence[float], released_s: float) -> None:
        v = self._verdict
        if v is None or v.reason == "hold":  # the base class's --max-delay-ms overrode a hold
            v = _Verdict("max delay", float(len(arrivals_s)), None if v is None else v.target)
        self._verdict = None
        reason_key = v.reason.split(":")[0]
        self.decisions[reason_key] += 1
        delays = [max(0.0, released_s - a) for a in arrivals_s]
        running, _ = self._upstream_load(released_s)
        rec = ReleaseRecord(
            group=group,
            released_s=released_s - self.origin_s,
            size=len(arrivals_s),
            delay_max_ms=max(delays) * 1e3,
            delay_mean_ms=sum(delays) / len(delays) * 1e3,
            reason=v.reason,
            rate_rps=self.rate.rate_rps(released_s),
            upstream_running=running,
            target_batch=v.target,
            predicted_batch=max(v.predicted_batch, len(arrivals_s) + running),
        )
        self.releases.append(rec)
        self._advance(released_s)
        self._in_flight += len(arrivals_s)
        self._open[group] = _Open(rec, released_s, self._area)

    def observe_response(self, response: ResponseEvent) -> None:
        r = response
        self._advance(r.ended_s)
        concurrency = None
        og = self._open.get(r.group)
        if og is not None and r.ended_s > og.released_s:
            concurrency = (self._area - og.area0) / (r.ended_s - og.released_s)
        self._in_flight = max(0, self._in_flight - 1)
        failed = r.status is None or r.status >= 500
        if r.status is not None:  # a client that left says nothing about the upstream
            self.health.observe(not failed)
        if og is None:
            return
        rec = og.record
        rec.answered += 1
        rec.failed += int(failed)
        if r.complete and not failed and concurrency is not None and concurrency > 0:
            ttft_s = None if r.first_byte_s is None else r.first_byte_s - r.released_s
            if ttft_s is not None and ttft_s >= 0:
                self._ttfts.append(ttft_s)
            self.cost.observe(
                concurrency, r.ended_s - r.released_s, rec.size, ttft_s, r.energy_j,
                running_at_release=rec.upstream_running,
            )  # fmt: skip
            prev = rec.realised_batch or 0.0
            ok_n = rec.answered - rec.failed
            rec.realised_batch = prev + (concurrency - prev) / ok_n
        if rec.answered >= rec.size:
            if og.batch_n:
                rec.upstream_batch = og.batch_sum / og.batch_n
            del self._open[r.group]

    def observe_upstream(self, t_s: float, samples: dict[str, float]) -> None:
        state = engine_state(t_s, samples)
        if state is None:
            return
        self.engine = state
        self._waiting_scrapes = self._waiting_scrapes + 1 if (state.waiting or 0) > 0 else 0
        if state.batch is not None:
            for og in self._open.values():
                og.batch_sum += state.batch
                og.batch_n += 1

    # -- explanation ---------------------------------------------------------------------------
    def forget_releases(self) -> None:
        # groups still open belong to the old gateway, whose group ids the next one reuses
        self.releases.clear()
        self.decisions.clear()
        self._open.clear()
        self._in_flight = 0

    def explain(self) -> dict[str, object]:
        return {
            "spec": self.spec(),
            "budget_ms": self.budget_s * 1e3,
            "guard_ms": self.guard_s * 1e3,
            "gain_floor": self.gain_floor,
            "max_batch": self.max_batch,
            "model": {
                **self.cost.to_dict(self.gain_floor, self.max_batch),
                "upstream_extra_ttft_p99_ms": self.upstream_extra_ttft_s() * 1e3,
            },
            "upstream": None if self.engine is None else self.engine.to_dict(),
            "decisions": dict(self.decisions),
            "releases": [r.to_dict() for r in self.releases],
        }

    def metric_families(self) -> list[Metric]:
        p = "joulebench_gateway_slo"
        rate = self.rate.rate_rps(self._area_t or 0.0)
        d0, d1 = self.cost.duration_params() or (math.nan, math.nan)
        out = [
            gauge(
                f"{p}_budget_seconds",
                "Latency budget: no request is held longer.",
                [({}, self.budget_s)],
            ),
            gauge(
                f"{p}_arrival_rate_rps",
                "Online estimate of the arrival rate.",
                [({}, math.nan if rate is None else rate)],
            ),
            gauge(
                f"{p}_target_batch",
                "Batch past which one more row saves < the gain floor.",
                [({}, self.cost.target_batch(self.gain_floor, self.max_batch))],
            ),
            gauge(
                f"{p}_cost_basis",
                "What the policy minimises per request: 1 for reported energy, 0 for busy time.",
                [({"basis": self.cost.basis}, 1.0 if self.cost.basis == "energy" else 0.0)],
            ),
            gauge(
                f"{p}_duration_seconds",
                "Fitted upstream time per request: d0 + d1 x batch.",
                [({"term": "d0"}, d0), ({"term": "d1"}, d1)],
            ),
            counter(
                f"{p}_decisions_total",
                "Releases by reason.",
                [({"reason": k}, n) for k, n in sorted(self.decisions.items())],
            ),
        ]
        recent = list(self.releases)[-METRICS_RELEASES:]
        for name, help_text, get in (
            ("release_group_size", "Requests in the release.", lambda r: r.size),
            ("release_delay_max_seconds", "Longest hold in the release.", lambda r: r.delay_max_ms / 1e3),
            ("release_predicted_batch", "Upstream batch the policy expected.", lambda r: r.predicted_batch),
            ("release_realised_batch", "Mean concurrency its requests saw.", lambda r: r.realised_batch),
        ):  # fmt: skip
            samples = [({"group": str(r.group)}, _or_nan(get(r))) for r in recent]
            out.append(
                gauge(f"{p}_{name}", f"{help_text} (last {METRICS_RELEASES} releases)", samples)
            )
        return out


def parse_slo(args: str, max_delay_s: float | None) -> SloPolicy:
    """``500ms`` or ``500ms,16`` (budget, optional largest batch worth forming)."""
    parts = [p.strip() for p in args.split(",")] if args else []
    if not parts or not parts[0] or len(parts) > 2:
        raise ConfigError(f"policy 'slo' needs a budget: slo:500ms or slo:500ms,16 (got {args!r})")
    budget = parse_duration_s(parts[0], what="slo budget")
    if len(parts) == 1:
        return SloPolicy(budget, max_delay_s=max_delay_s)
    try:
        max_batch = int(parts[1])
    except ValueError:
        raise ConfigError(f"slo max batch must be an integer, got {parts[1]!r}") from None
    return SloPolicy(budget, max_batch=max_batch, max_delay_s=max_delay_s)


@dataclass(frozen=True, slots=True)
class Summary:
    """A few numbers from :meth:`SloPolicy.explain` (means over releases)."""

    releases: int
    mean_group_size: float | None
    mean_delay_ms: float | None
    max_delay_ms: float | None
    mean_predicted_batch: float | None
    mean_realised_batch: float | None
    decisions: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize_decisions(decisions: dict[str, Any]) -> Summary:
    """Releases, mean group, delays and batches (predicted vs realised) from ``explain()``."""
    recs = [r for r in decisions.get("releases") or [] if isinstance(r, dict)]

    def mean(key: str) -> float | None:
        xs = [float(r[key]) for r in recs if r.get(key) is not None]
        return sum(xs) / len(xs) if xs else None

    return Summary(
        releases=len(recs),
        mean_group_size=mean("size"),
        mean_delay_ms=mean("delay_mean_ms"),
        max_delay_ms=max((float(r["delay_max_ms"]) for r in recs), default=None),
        mean_predicted_batch=mean("predicted_batch"),
        mean_realised_batch=mean("realised_batch"),
        decisions={str(k): int(v) for k, v in (decisions.get("decisions") or {}).items()},
    )


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
