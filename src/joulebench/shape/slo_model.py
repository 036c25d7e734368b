"""The online estimates behind the ``slo`` policy: arrival rate, upstream cost, upstream health.

All take times from their caller (no clock of their own) and hold O(1) or bounded state.

:class:`RateEstimator`
    λ from the last ``k`` arrivals (k-nearest-neighbour: ``(n − 1) / (now − oldest)``), capped
    by ``3 / gap`` where ``gap`` is the time since the newest arrival or the gap before it, so a
    step up is seen within ``k`` arrivals and a silence pulls the estimate down at once.
(fits)
    ``y ≈ a + s·x`` by :class:`joulebench.analysis.stats.ForgettingLine`: least squares with
    exponential forgetting and a ridge prior pulling the slope towards ``ratio × a`` (with only
    one batch size seen, the slope is not identifiable; the prior decides until the data vary).
:class:`CostModel`
    upstream seconds per request ``D(b) = d0 + d1·b`` against the concurrency ``b`` it ran at,
    so busy seconds per request are ``c(b) = D(b) / b``; where the upstream reports each
    response's energy (joulebench serve's ``x-energy-j`` / ``usage.energy``, TGI's
    ``energy_mj``), the same form fitted to energy, which then is the cost (time stands for
    energy only at steady power: on a CPU, batching cut the estimated energy per request by
    38 % while the time per request barely moved); and the first-token time of a group of
    ``g`` released beside ``r`` running requests, ``t0 + tg·(g − 1) + tr·r``: the latency a
    bigger group, and the bigger batch it makes upstream, cost a held request.
:class:`Health`
    the last outcomes: failing after 3 failures in a row or half of the last ones.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from joulebench.analysis.stats import ForgettingFit, ForgettingLine

#: Fallback rate cap: λ ≤ RATE_GAP_FACTOR / (largest recent gap).
RATE_GAP_FACTOR = 3.0
MIN_SPAN_S = 1e-3
#: How far past the largest batch it has seen the cost line is trusted: a target batch is at
#: most ``REACH × seen`` (rounded up, at least 2). Until the batches vary the slope is the
#: prior's, which promises gains all the way to the maximum; this makes the targets grow with
#: the evidence (1 → 2 → 4 → 8 …) instead of holding for a batch nobody has measured.
REACH = 2.0


@dataclass(slots=True)
class RateEstimator:
    k: int = 16
    min_arrivals: int = 8
    max_age_s: float = 10.0
    _times: deque[float] = field(init=False)  # the last k arrivals

    def __post_init__(self) -> None:
        self._times = deque(maxlen=self.k)

    def observe(self, t_s: float) -> None:
        self._times.append(t_s)

    def recent(self, now_s: float) -> int:
        return sum(1 for t in self._times if now_s - t <= self.max_age_s)

    def rate_rps(self, now_s: float) -> float | None:
        """Arrivals per second now, or ``None`` with fewer than ``min_arrivals`` recent ones."""
        ts = [t for t in self._times if now_s - t <= self.max_age_s]
        if len(ts) < max(self.min_arrivals, 2):
            return None
        knn = (len(ts) - 1) / max(now_s - ts[0], MIN_SPAN_S)
        gap = max(now_s - ts[-1], ts[-1] - ts[-2])
        return min(knn, RATE_GAP_FACTOR / gap) if gap > MIN_SPAN_S else knn


def _fit(ratio: float) -> ForgettingLine:
    """A cost line forgetting 1 % per response, its slope pulled towards ``ratio × a``."""
    return ForgettingLine(forget=0.99, prior_ratio=ratio, prior_weight=2.0)


def poisson_mean(mean: float, fn: Callable[[int], float]) -> float:
    """``E[fn(N)]`` for ``N ~ Poisson(mean)`` (the tail beyond 6σ is dropped)."""
    if mean <= 0:
        return float(fn(0))
    kmax = int(mean + 6 * math.sqrt(mean) + 6)
    p = math.exp(-mean)
    total = mass = 0.0
    for k in range(kmax + 1):
        total += p * float(fn(k))
        mass += p
        p *= mean / (k + 1)
    return total / mass


@dataclass(slots=True)
class CostModel:
    """What a request costs upstream as a function of its batch, learnt from responses."""

    #: A priori, one more concurrent request costs 15 % of a lone one's time, and a released
    #: group's first token comes 30 % later per request upstream (its own members and those
    #: already running: a bigger batch's steps are slower); the data take over as they vary.
    duration: ForgettingLine = field(default_factory=lambda: _fit(0.15))
    #: first-token time = t0 + tg·(g − 1) + tr·r for a group of g released beside r running
    ttft: ForgettingFit = field(
        default_factory=lambda: ForgettingFit(
            2, forget=0.99, prior_ratios=(0.3, 0.3), prior_weight=2.0
        )
    )
    #: Where the upstream reports each response's energy: ``E(b) = e0 + e1·b``, the energy of
    #: a batch of ``b`` (a response's energy × the concurrency it ran at), same form as D(b).
    energy: ForgettingLine = field(default_factory=lambda: _fit(0.15))
    n_responses: int = 0
    n_energy: int = 0
    #: The largest concurrency a response has run at so far.
    seen_batch: float = 0.0
    #: Responses with a reported energy before it, not time, is the cost minimised.
    min_energy: int = 4

    def observe(
        self,
        batch: float,
        duration_s: float,
        group: int,
        ttft_s: float | None,
        energy_j: float | None = None,
        *,
        running_at_release: float = 0.0,
    ) -> None:
        """One response: the concurrency it ran at (``batch``), its time upstream, its group's
        size and the requests already running upstream when that group was released, its
        first-token time from the release, and the energy the upstream reported (if any)."""
        self.n_responses += 1
        if math.isfinite(batch):
            self.seen_batch = max(self.seen_batch, batch)
        self.duration.observe(batch, duration_s)
        if ttft_s is not None and ttft_s >= 0:
            self.ttft.observe_point((float(group) - 1.0, float(running_at_release)), ttft_s)
        if energy_j is not None and math.isfinite(energy_j) and energy_j > 0:
            self.n_energy += 1
            self.energy.observe(batch, energy_j * batch)

    @property
    def basis(self) -> str:
        """What :meth:`per_request` measures: the upstream's reported ``energy`` once enough
        responses carried it, else its busy ``time`` (a stand-in for energy at steady power)."""
        usable = self.n_energy >= self.min_energy and self.energy.params() is not None
        return "energy" if usable else "time"

    def duration_params(self) -> tuple[float, float] | None:
        return self.duration.params()

    def usable(self) -> bool:
        p = self.duration.params()
        return p is not None and (p[0] > 0 or p[1] > 0)

    def per_request(self, batch: float) -> float:
        """Cost per request at ``batch``, ``c(b) = a / b + s`` (terms floored at 0): joules from
        the energy line when :attr:`basis` is ``energy``, else busy seconds."""
        line = self.energy if self.basis == "energy" else self.duration
        a, s = line.params() or (1.0, 0.0)
        return max(a, 0.0) / max(batch, 1.0) + max(s, 0.0)

    def reach(self, max_batch: int) -> int:
        """The largest batch the cost line is trusted at: ``REACH ×`` the largest seen (at
        least 2), never above ``max_batch``."""
        return min(max_batch, max(2, math.ceil(REACH * self.seen_batch)))

    def target_batch(self, gain_floor: float, max_batch: int) -> int:
        """Smallest batch where one more row saves < ``gain_floor`` of ``c(b)``, at most
        :meth:`reach`."""
        top = self.reach(max_batch)
        for b in range(1, top):
            c = self.per_request(b)
            if c <= 0 or (c - self.per_request(b + 1)) / c < gain_floor:
                return b
        return top

    def expected_gain(self, batch: float, mean_arrivals: float, max_batch: int) -> float:
        """``1 − E[c(batch + N)] / c(batch)``, ``N ~ Poisson(mean_arrivals)``, the batch
        counted at most up to :meth:`reach` (no gain is promised beyond what was seen)."""
        c0 = self.per_request(batch)
        if c0 <= 0:
            return 0.0
        cap = max(float(self.reach(max_batch)), batch)
        later = poisson_mean(mean_arrivals, lambda k: self.per_request(min(batch + k, cap)))
        return 1.0 - later / c0

    def ttft_penalty_s(
        self, group: float, running: float = 0.0, running_direct: float = 0.0
    ) -> float:
        """How much later a request gets its first token when released in a group of ``group``
        beside ``running`` requests than when sent alone beside ``running_direct`` (what direct
        sending would find upstream): ``tg·(g − 1) + tr·(r − r_direct)``, terms floored at 0."""
        c = self.ttft.coefficients()
        if c is None:
            return 0.0
        _, tg, tr = c
        return max(tg, 0.0) * max(group - 1.0, 0.0) + max(tr, 0.0) * max(
            running - running_direct, 0.0
        )

    def capacity_rps(self) -> float:
        """Requests per second the upstream can finish at most: ``b / D(b)`` tends to ``1/d1``
        as its batch grows (infinite while ``d1`` is not positive)."""
        p = self.duration.params()
        return 1.0 / p[1] if p is not None and p[1] > 0 else math.inf

    def running_direct(self, rate_rps: float) -> float:
        """Requests upstream under direct sending at ``rate_rps`` (Little's law with a lone
        request's time upstream, ``d0 + d1``)."""
        d0, d1 = self.duration.params() or (0.0, 0.0)
        return rate_rps * max(d0 + d1, 0.0)

    def to_dict(self, gain_floor: float, max_batch: int) -> dict[str, object]:
        d = self.duration.params()
        t = self.ttft.coefficients()
        e = self.energy.params() if self.n_energy else None
        return {
            "responses": self.n_responses,
            "basis": self.basis,
            "responses_with_energy": self.n_energy,
            "duration_s": None if d is None else {"d0": d[0], "d1": d[1]},
            "batch_energy_j": None if e is None else {"e0": e[0], "e1": e[1]},
            "ttft_s": None
            if t is None
            else {"t0": t[0], "per_group_member": t[1], "per_running": t[2]},
            "seen_batch": self.seen_batch,
            "target_batch": self.target_batch(gain_floor, max_batch),
        }


@dataclass(slots=True)
class Health:
    window: int = 20
    _outcomes: deque[bool] = field(init=False)  # the last ``window`` outcomes

    def __post_init__(self) -> None:
        self._outcomes = deque(maxlen=self.window)

    def observe(self, ok: bool) -> None:
        self._outcomes.append(ok)

    def failing(self) -> str | None:
        """Why the upstream counts as failing now, or ``None``."""
        xs = list(self._outcomes)
        if len(xs) >= 3 and not any(xs[-3:]):
            return "upstream failing (last 3 responses failed)"
        bad = xs.count(False)
        if len(xs) >= 4 and bad * 2 >= len(xs):
            return f"upstream failing ({bad} of the last {len(xs)} responses failed)"
        return None
