"""Repeat statistics: mean, standard deviation, Student-t 95 % confidence half-width, stopping rule.

Every repeat is kept by the caller; these functions only summarise. The t quantiles are tabulated
(two-sided 95 %) so the core needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95 % Student t quantiles t_{0.975, df} for df = 1..30; beyond 30 an interpolation
# towards the normal quantile 1.95996 is accurate to < 0.5 %.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """Two-sided 95 % Student t quantile for ``df`` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    # t ≈ z + (z³ + z) / (4 df): first term of the Cornish-Fisher expansion.
    return _Z975 + (_Z975**3 + _Z975) / (4.0 * df)


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean, sample standard deviation and 95 % CI half-width (absolute and relative)."""

    n: int
    mean: float
    std: float | None  # None with one value: one value has no spread (never a reassuring 0.0)
    ci_halfwidth: float | None
    min: float
    max: float

    @property
    def ci_halfwidth_rel(self) -> float | None:
        """Half-width divided by |mean|; ``None`` with fewer than 2 values or a zero mean."""
        if self.ci_halfwidth is None or self.mean == 0:
            return None
        return self.ci_halfwidth / abs(self.mean)

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci95_halfwidth": self.ci_halfwidth,
            "ci_halfwidth_rel": self.ci_halfwidth_rel,
            "min": self.min,
            "max": self.max,
        }


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile, ``q`` in [0, 1] (numpy's default); ``None`` for no values.

    The one quantile of joulebench: latency percentiles (p50/p90/p99 = q 0.5/0.9/0.99), the
    gateway's /metrics summaries and the benchmarks all use it.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(values: Sequence[float]) -> Summary:
    """Summarise repeat values; raises ValueError on an empty sequence or a non-finite value."""
    if not values:
        raise ValueError("cannot summarise zero repeats")
    xs = [float(v) for v in values]
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"non-finite repeat value in {xs}")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(n, mean, None, None, xs[0], xs[0])
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    std = math.sqrt(var)
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, half, min(xs), max(xs))


@dataclass(frozen=True, slots=True)
class StoppingRule:
    """Repeat until the relative 95 % CI half-width is ≤ ``ci_target`` or ``max_repeats`` is hit.

    At least ``min_repeats`` (≥ 2, a CI needs two values) repeats are always made.
    """

    ci_target: float = 0.02
    min_repeats: int = 3
    max_repeats: int = 10

    def __post_init__(self) -> None:
        if not self.ci_target > 0:
            raise ValueError(f"ci_target must be > 0, got {self.ci_target}")
        if self.min_repeats < 2:
            raise ValueError(
                f"min_repeats must be ≥ 2 (a CI needs two values), got {self.min_repeats}"
            )
        if self.max_repeats < self.min_repeats:
            raise ValueError(
                f"max_repeats ({self.max_repeats}) must be ≥ min_repeats ({self.min_repeats})"
            )

    def done(self, values: Sequence[float]) -> bool:
        n = len(values)
        if n >= self.max_repeats:
            return True
        if n < self.min_repeats:
            return False
        rel = summarize(values).ci_halfwidth_rel
        return rel is not None and rel <= self.ci_target

    def converged(self, values: Sequence[float]) -> bool:
        """True when the CI target was reached (not merely the cap)."""
        if len(values) < 2:
            return False
        rel = summarize(values).ci_halfwidth_rel
        return rel is not None and rel <= self.ci_target


@dataclass(slots=True)
class ForgettingLine:
    """Least squares of ``y = a + s·x`` over exponentially forgotten observations.

    Each new observation multiplies the weight of the earlier ones by ``forget`` (1: none
    forgotten), so the fit follows a drifting machine. An optional ridge prior pulls the slope
    towards ``prior_ratio × a`` with weight ``prior_weight``: with one ``x`` seen so far the
    slope is not identifiable, and the prior decides until the data vary. Used wherever
    joulebench learns a cost online (the dynamic scheduler's batch costs, the ``slo`` policy's
    upstream model).
    """

    forget: float = 1.0
    prior_ratio: float = 0.0
    prior_weight: float = 0.0
    sw: float = 0.0
    sx: float = 0.0
    sxx: float = 0.0
    sy: float = 0.0
    sxy: float = 0.0
    n: int = 0

    def observe(self, x: float, y: float) -> None:
        """Add one point (non-finite ones are ignored)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        f = self.forget
        self.sw = f * self.sw + 1.0
        self.sx = f * self.sx + x
        self.sxx = f * self.sxx + x * x
        self.sy = f * self.sy + y
        self.sxy = f * self.sxy + x * y
        self.n += 1

    def params(self) -> tuple[float, float] | None:
        """``(a, s)``, or ``None`` before any point or while the system is (nearly) singular
        (without a prior: every ``x`` so far the same)."""
        if self.sw <= 0:
            return None
        k, r = self.prior_weight, self.prior_ratio
        m11, m12, m22 = self.sw + k * r * r, self.sx - k * r, self.sxx + k
        det = m11 * m22 - m12 * m12
        if det <= 1e-9 * max(1.0, m11 * m22):
            return None
        a = (self.sy * m22 - m12 * self.sxy) / det
        s = (m11 * self.sxy - m12 * self.sy) / det
        return (a, s) if math.isfinite(a) and math.isfinite(s) else None
