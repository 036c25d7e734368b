"""A load test's summary: the object ``load --json`` prints and the store keeps.

The second result type beside :mod:`joulebench.results.cell` (a profile cell), declared the same
way: TypedDicts over the plain JSON mapping, so every key is checked by mypy where
``LoadResult.to_json`` writes it and where commands and the store read it, while the object,
its keys and their order stay what stores and scripts already hold; :func:`validate_load_summary`
checks a real object against the declarations at run time (extra keys refused).

The ``energy`` section's shape depends on the accounting and the meter (per-request energies
under several accountings, the steady state, the server's own figures); its type belongs to
``load/accounting.py`` and stays a mapping here, as do the run's ``config`` and the meter's
description (``meters.base.MeterInfo``).
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict

from joulebench.results.typed import check, closed


@closed
class RequestCounts(TypedDict):
    """How the requests ended: ``failed`` counts every request that is not ``ok`` (truncated,
    timed out and errored together); ``errors`` groups them by message."""

    total: int
    ok: int
    failed: int
    truncated: int
    timed_out: int
    errored: int
    failed_rate: float | None
    errors: dict[str, int]


@closed
class LatencySummary(TypedDict):
    """Percentiles, mean and count of one latency over the requests it applies to (ms)."""

    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None
    n: int


@closed
class TokenTotals(TypedDict):
    """Tokens of the successful requests, and where their counts came from."""

    input: int
    output: int
    sources: list[str]


@closed
class AuditVerdicts(TypedDict):
    """How many audit checks passed, and the names of those that failed."""

    passed: int
    failed: list[str]


@closed
class LoadSummary(TypedDict):
    """The whole summary of one load test (``LoadResult.to_json``), with what the commands add:
    ``engine`` (a launched or watched engine), ``gateway`` (a run through the shaping gateway)
    and ``run_id`` (once stored)."""

    config: dict[str, Any]
    requests: RequestCounts
    duration_s: float
    target_rate_rps: float | None
    achieved_rate_rps: float | None
    achieved_over_target: float | None
    throughput_rps: float | None
    schedule_lag_ms: LatencySummary
    ttft_ms: LatencySummary
    tpot_ms: LatencySummary
    itl_ms: LatencySummary
    e2e_ms: LatencySummary
    queue_ms: LatencySummary
    tokens: TokenTotals
    energy: dict[str, Any]
    audits: AuditVerdicts
    meter_methods: dict[str, str]
    meter: dict[str, Any] | None
    estimated: bool
    engine: NotRequired[dict[str, Any]]
    gateway: NotRequired[dict[str, Any]]
    run_id: NotRequired[str]


def validate_load_summary(obj: object) -> LoadSummary:
    """``obj`` checked against :class:`LoadSummary`, every nested section included; a key the
    declarations do not name, or a value of the wrong type, raises pydantic's
    ``ValidationError``. Returns the same object, typed."""
    return check(LoadSummary, obj)
