"""Repeat statistics: mean, standard deviation, Student-t 95 % confidence half-width, stopping rule.

Every repeat is kept by the caller; these functions only summarise. The t quantiles are tabulated
(two-sided 95 %) so the core needs no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from joulebench.errors import at_least, positive

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
    at_least(df, 1, "degrees of freedom", error=ValueError)
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
        positive(self.ci_target, "ci_target", error=ValueError)
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


class ForgettingFit:
    """Least squares of ``y = a + s₁·x₁ + … + s_k·x_k`` over exponentially forgotten points.

    Each new point multiplies the weight of the earlier ones by ``forget`` (1: none forgotten),
    so the fit follows a drifting machine. An optional ridge prior pulls each slope ``s_i``
    towards ``prior_ratios[i] × a`` with weight ``prior_weight``: while an ``x_i`` has not
    varied its slope is not identifiable, and the prior decides until the data vary. Used
    wherever joulebench learns a cost online (the dynamic scheduler's batch costs, the ``slo``
    policy's upstream model).
    """

    __slots__ = (
        "_cached", "_m", "_v", "forget", "k", "n", "prior_ratios", "prior_weight", "sw", "sy",
    )  # fmt: skip

    def __init__(
        self, k: int = 1, *, forget: float = 1.0, prior_ratios: Sequence[float] = (),
        prior_weight: float = 0.0,
    ) -> None:  # fmt: skip
        if k < 1:
            raise ValueError(f"a fit needs at least one variable, got {k}")
        ratios = tuple(float(r) for r in prior_ratios) or (0.0,) * k
        if len(ratios) != k:
            raise ValueError(f"{len(ratios)} prior ratios for {k} variables")
        self.k, self.forget, self.prior_ratios, self.prior_weight = k, forget, ratios, prior_weight
        self._m = [[0.0] * (k + 1) for _ in range(k + 1)]  # Σ w·zzᵀ, z = (1, x₁ … x_k)
        self._v = [0.0] * (k + 1)  # Σ w·z·y
        self.sw = self.sy = 0.0  # Σ w and Σ w·y (their ratio is the weighted mean of y)
        self.n = 0
        # the solution until the next point: a policy asks for it many times per decision
        self._cached: tuple[tuple[float, ...] | None] | None = None

    def observe_point(self, xs: Sequence[float], y: float) -> None:
        """Add one point (non-finite ones are ignored)."""
        z = (1.0, *(float(x) for x in xs))
        if len(z) != self.k + 1 or not all(math.isfinite(v) for v in (*z, y)):
            return
        f = self.forget
        for i, zi in enumerate(z):
            self._v[i] = f * self._v[i] + zi * y
            row = self._m[i]
            for j, zj in enumerate(z):
                row[j] = f * row[j] + zi * zj
        self.sw = f * self.sw + 1.0
        self.sy = f * self.sy + y
        self.n += 1
        self._cached = None

    def coefficients(self) -> tuple[float, ...] | None:
        """``(a, s₁, …, s_k)``, or ``None`` before any point or while the system is (nearly)
        singular (without a prior: some ``x_i`` has not varied)."""
        if self._cached is None:
            self._cached = (self._solve(),)
        return self._cached[0]

    def _solve(self) -> tuple[float, ...] | None:
        if self.sw <= 0:
            return None
        m = [row[:] for row in self._m]
        v = self._v[:]
        kw = self.prior_weight
        for i, r in enumerate(self.prior_ratios, start=1):  # kw·(s_i − r·a)²
            m[0][0] += kw * r * r
            m[0][i] -= kw * r
            m[i][0] -= kw * r
            m[i][i] += kw
        scale = [math.sqrt(max(m[i][i], 1e-300)) for i in range(self.k + 1)]
        return _solve(m, v, scale)


def _solve(m: list[list[float]], v: list[float], scale: list[float]) -> tuple[float, ...] | None:
    """Gaussian elimination with partial pivoting on the (diagonally scaled) normal equations;
    ``None`` when a pivot is below 1e-9 of its scale (a singular system)."""
    n = len(v)
    a = [[m[i][j] / (scale[i] * scale[j]) for j in range(n)] + [v[i] / scale[i]] for i in range(n)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) < 1e-9:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(n):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col], strict=True)]
    out = tuple(a[i][n] / a[i][i] / scale[i] for i in range(n))
    return out if all(math.isfinite(x) for x in out) else None


class ForgettingLine(ForgettingFit):
    """:class:`ForgettingFit` of one variable: ``y = a + s·x``."""

    __slots__ = ()

    def __init__(
        self, forget: float = 1.0, prior_ratio: float = 0.0, prior_weight: float = 0.0
    ) -> None:
        super().__init__(1, forget=forget, prior_ratios=(prior_ratio,), prior_weight=prior_weight)

    def observe(self, x: float, y: float) -> None:
        """Add one point (non-finite ones are ignored)."""
        self.observe_point((x,), y)

    def params(self) -> tuple[float, float] | None:
        """``(a, s)``, or ``None`` before any point or while every ``x`` so far is the same
        (without a prior)."""
        c = self.coefficients()
        return None if c is None else (c[0], c[1])
