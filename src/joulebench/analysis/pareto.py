"""The energy-vs-latency Pareto front, one rule for the shape sweep and the report.

A point is (energy per request, latency); lower is better on both. Only *eligible* points may
be on the front: energy and latency are figures over successful requests, so a run that lost
some looks cheap and fast because its hard requests are missing, and an energy at or below zero
is below the idle baseline, not a saving. Such points are drawn and listed, with the reason,
but never on the front.
"""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each ``(energy, latency)``, True if no other point is ≤ on both and < on one."""
    flags = []
    for i, (a, b) in enumerate(points):
        dominated = any(
            a2 <= a and b2 <= b and (a2 < a or b2 < b)
            for j, (a2, b2) in enumerate(points)
            if j != i
        )
        flags.append(not dominated)
    return flags


def excluded(energy: float | None, latency: float | None, failed: int) -> str | None:
    """Why a point may not be on the front, or ``None`` when it may (module docstring)."""
    if energy is None or latency is None:
        return "no energy or no latency"
    if failed:
        return f"{failed} failed request(s): its figures cover the successful ones only"
    if energy <= 0:
        return "energy per request ≤ 0 (below the idle baseline): not resolved"
    return None
