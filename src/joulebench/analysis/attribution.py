"""Per-request energy attribution from a power timeline, shared by token work.

The timeline is a series of ``(t_s, cumulative J)`` points. Between two points the power is taken
as constant (linear interpolation of the cumulative energy, as :class:`PowerTimeline` does). The
time axis is cut at every sample and at every span edge; each resulting slice's energy is shared
among the spans active in it in proportion to the token *work* each does in that slice (a span's
work is spread uniformly over ``[start_s, end_s]``). Where the only active spans carry no work
(a request still waiting for its first token, say), they share the slice equally.

Slices with no active span at all are *idle gaps*. Their energy is reported as ``idle_gap_j`` and
is **also** spread over the keys in proportion to each key's share of the active energy, so that
``sum(per_key_j) == total_j``, the energy of the whole series (the covered span). A key's figure
therefore includes its share of idle time; ``active_j`` tells how much was spent while requests
were actually in flight. With ``idle_power_w`` the same is done on the net series
``E(t) − idle_power_w · (t − t0)``, giving ``per_key_net_j`` that sums to ``total_net_j``; the
net idle-gap energy is spread with the *gross* active shares (net active energies can have mixed
signs, and shares of their near-zero sum would blow up).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

METHOD = "timeline-token-share"
IDLE_GAP_NOTE = (
    "energy of idle gaps (no request in flight) is spread over requests in proportion to their "
    "active energy, so per-request energies sum to the whole timeline's energy"
)


@dataclass(frozen=True, slots=True)
class WorkSpan:
    """``work`` units (tokens) done by ``key`` uniformly over ``[start_s, end_s]``."""

    key: Hashable
    start_s: float
    end_s: float
    work: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)):
            raise ValueError(f"span {self.key!r} has a non-finite time")
        if self.end_s < self.start_s:
            raise ValueError(
                f"span {self.key!r} ends ({self.end_s}) before it starts ({self.start_s})"
            )
        if not math.isfinite(self.work) or self.work < 0:
            raise ValueError(f"span {self.key!r} has invalid work {self.work!r} (must be ≥ 0)")


@dataclass(frozen=True, slots=True)
class Attribution:
    """Energy per key. ``per_key_j`` includes each key's share of the idle gaps (see module doc)."""

    per_key_j: dict[Hashable, float]
    per_key_net_j: dict[Hashable, float] | None
    total_j: float
    total_net_j: float | None
    active_j: float
    idle_gap_j: float
    duration_s: float
    sum_rel_err: float
    method: str = METHOD
    note: str = field(default=IDLE_GAP_NOTE)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "note": self.note,
            "total_j": self.total_j,
            "total_net_j": self.total_net_j,
            "active_j": self.active_j,
            "idle_gap_j": self.idle_gap_j,
            "duration_s": self.duration_s,
            "sum_rel_err": self.sum_rel_err,
            "keys": len(self.per_key_j),
        }


def _validate_series(series: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    pts = [(float(t), float(e)) for t, e in series]
    if len(pts) < 2:
        raise ValueError(f"attribution needs at least 2 timeline samples, got {len(pts)}")
    for (t0, _), (t1, _) in itertools.pairwise(pts):
        if t1 < t0:
            raise ValueError(f"timeline times must not decrease ({t0} then {t1})")
    if pts[-1][0] <= pts[0][0]:
        raise ValueError("timeline covers no time (first and last samples at the same instant)")
    return pts


def _energy_at(times: list[float], energy: list[float], t: float) -> float:
    i = bisect.bisect_right(times, t)
    if i == 0:
        return energy[0]
    if i >= len(times):
        return energy[-1]
    t0, t1 = times[i - 1], times[i]
    frac = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
    return energy[i - 1] + frac * (energy[i] - energy[i - 1])


def _share(
    times: list[float], energy: list[float], spans: Sequence[WorkSpan]
) -> tuple[dict[Hashable, float], float]:
    """Active energy per key (before idle-gap spreading) and the idle-gap energy."""
    lo, hi = times[0], times[-1]
    # Clip spans to the covered span; work is scaled to the part that was measured.
    clipped: list[tuple[int, float, float, float]] = []  # (span index, start, end, density)
    for i, s in enumerate(spans):
        a, b = max(s.start_s, lo), min(s.end_s, hi)
        if b <= a:
            continue  # zero-length or outside the timeline: no measured time to share
        density = s.work / (s.end_s - s.start_s)
        clipped.append((i, a, b, density))
    # Breakpoints: every sample and every span edge; events change the active set.
    delta_density: dict[float, float] = defaultdict(float)
    delta_count: dict[float, int] = defaultdict(int)
    delta_working: dict[float, int] = defaultdict(int)  # spans with work > 0
    for _, a, b, d in clipped:
        delta_density[a] += d
        delta_density[b] -= d
        delta_count[a] += 1
        delta_count[b] -= 1
        if d > 0:
            delta_working[a] += 1
            delta_working[b] -= 1
    cuts = sorted(set(times) | set(delta_density))
    # Running integrals G_work(t) = Σ e/D over slices with D > 0 and G_count for D == 0, count > 0.
    g_work: dict[float, float] = {}
    g_count: dict[float, float] = {}
    gw = gc = 0.0
    density_sum = 0.0
    count = working = 0
    idle_gap_j = 0.0
    prev_t = cuts[0]
    prev_e = _energy_at(times, energy, prev_t)
    for t in cuts:
        if t > prev_t:
            e_now = _energy_at(times, energy, t)
            slice_j = e_now - prev_e
            if count <= 0:
                idle_gap_j += slice_j
            elif working > 0:
                gw += slice_j / density_sum
            else:
                gc += slice_j / count
            prev_t, prev_e = t, e_now
        count += delta_count.get(t, 0)
        working += delta_working.get(t, 0)
        # exactly 0 once no span with work is active: summing large densities up and down
        # leaves a rounding residue, and dividing by it would send energy to no span
        density_sum = density_sum + delta_density.get(t, 0.0) if working > 0 else 0.0
        g_work[t], g_count[t] = gw, gc
    per_key: dict[Hashable, float] = defaultdict(float)
    for s in spans:
        per_key[s.key] += 0.0  # every key appears, even one with no measured time
    for i, a, b, d in clipped:
        key = spans[i].key
        if d > 0:
            per_key[key] += d * (g_work[b] - g_work[a])
        else:
            per_key[key] += g_count[b] - g_count[a]
    return dict(per_key), idle_gap_j


def _spread_idle(
    per_key: dict[Hashable, float],
    idle_gap_j: float,
    weights: dict[Hashable, float] | None = None,
) -> dict[Hashable, float]:
    """Add ``idle_gap_j`` to the keys in proportion to ``weights`` (default: ``per_key``).

    The weights must not change sign across keys: net energies can (a key whose span saw no
    counter step is negative), and shares of a near-zero mixed-sign sum explode, so the net
    series is spread with the gross (non-negative) active energies as weights.
    """
    if not per_key:
        return {}
    w = per_key if weights is None else weights
    total_w = sum(w.values())
    if abs(total_w) > 1e-15:
        return {k: v + idle_gap_j * (w.get(k, 0.0) / total_w) for k, v in per_key.items()}
    equal = idle_gap_j / len(per_key)
    return {k: v + equal for k, v in per_key.items()}


def attribute_energy(
    series: Sequence[tuple[float, float]],
    spans: Sequence[WorkSpan],
    *,
    idle_power_w: float | None = None,
) -> Attribution:
    """Share the energy of ``series`` (``(t_s, cumulative J)``) among ``spans`` by token work.

    ``per_key_j`` sums to ``total_j`` (the energy between the first and last samples): the
    energy of idle gaps (``idle_gap_j``) is included, spread in proportion to each key's active
    energy. With ``idle_power_w``, ``per_key_net_j`` is the same on the idle-subtracted series.
    Span time outside the series is not measured and is ignored.
    """
    pts = _validate_series(series)
    if idle_power_w is not None and (not math.isfinite(idle_power_w) or idle_power_w < 0):
        raise ValueError(f"idle_power_w must be a finite number ≥ 0, got {idle_power_w!r}")
    times = [t for t, _ in pts]
    energy = [e for _, e in pts]
    total_j = energy[-1] - energy[0]
    duration_s = times[-1] - times[0]
    active, idle_gap_j = _share(times, energy, spans)
    per_key_j = _spread_idle(active, idle_gap_j)
    per_key_net_j: dict[Hashable, float] | None = None
    total_net_j: float | None = None
    if idle_power_w is not None:
        net = [e - idle_power_w * (t - times[0]) for t, e in pts]
        active_net, idle_net = _share(times, net, spans)
        per_key_net_j = _spread_idle(active_net, idle_net, weights=active)
        total_net_j = net[-1] - net[0]
    if per_key_j:
        err = abs(sum(per_key_j.values()) - total_j)
        sum_rel_err = err / abs(total_j) if abs(total_j) > 0 else (0.0 if err == 0 else math.inf)
    else:
        sum_rel_err = 0.0 if total_j == 0 else 1.0  # nothing to attribute to
    return Attribution(
        per_key_j=per_key_j,
        per_key_net_j=per_key_net_j,
        total_j=total_j,
        total_net_j=total_net_j,
        active_j=total_j - idle_gap_j,
        idle_gap_j=idle_gap_j,
        duration_s=duration_s,
        sum_rel_err=sum_rel_err,
    )
