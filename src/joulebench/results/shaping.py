"""A shaping comparison's and a policy sweep's results: the objects ``shape-compare --json``
(and ``load --via-shape --json``) and ``shape-sweep --json`` (and its ``sweep.json``) print.

Declared like :mod:`joulebench.results.cell` and :mod:`joulebench.results.load_summary`:
TypedDicts over the plain JSON mapping, so mypy checks every key where
``shape.experiment.Comparison.to_json`` and ``shape.sweep.Sweep.to_json`` write it, while the
object, its keys and their order stay what scripts already read; :func:`validate_comparison` and
:func:`validate_sweep` check a real object against the declarations at run time (extra keys
refused).

Sections whose shape belongs to another module stay mappings here: each run's load summary
(:class:`~joulebench.results.load_summary.LoadSummary`, without its ``gateway``, said beside
it), the gateway's snapshot (``shape.metrics.GatewayMetrics.snapshot``), the policy's
description (``shape.policies``), the run's ``config`` and the launched engine's section
(``load.engines.session``).
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict

from joulebench.results.typed import check, closed


@closed
class ServerBatching(TypedDict):
    """The server's mean batch size over a run, from its ``/metrics`` counters read before and
    after (``None`` without them); ``note`` says which counters."""

    mean_batch_size: float | None
    note: str
    steps: NotRequired[float]
    batch_size_max_since_start: NotRequired[float]


@closed
class TailLatency(TypedDict):
    """Median and 99th percentile of one latency over a run's requests (ms)."""

    p50: float | None
    p99: float | None


@closed
class RunHeadline(TypedDict):
    """One measured run (direct or through one policy), as the tables read it: energy per
    request under every accounting (gross and net), latencies, the gateway's added delay
    (zeros for the direct run) and batch sizes."""

    label: str
    ok: int | None
    failed: int | None
    energy_per_request_j: dict[str, float | None]
    ttft_ms: TailLatency
    e2e_ms: TailLatency
    added_delay_ms: dict[str, float | None]
    mean_batch_size: float | None
    mean_group_size: float | None


@closed
class ShapedRun(RunHeadline):
    """One measured run in full: its headline, the server's batching, the gateway's snapshot
    (``None`` for the direct run) and the load summary."""

    server: ServerBatching
    gateway: dict[str, Any] | None
    load: dict[str, Any]


@closed
class ComparisonRow(TypedDict):
    """One metric of the side-by-side table, and its relative change (``None`` unless both
    figures are positive)."""

    metric: str
    direct: float | None
    shaped: float | None
    change: float | None


@closed
class ComparisonResult(TypedDict):
    """Direct vs shaped, same trace, server and meter (``Comparison.to_json``)."""

    policy: dict[str, Any]
    config: dict[str, Any]
    energy_method: str | None
    estimated: bool
    table: list[ComparisonRow]
    direct: ShapedRun
    shaped: ShapedRun
    engine: NotRequired[dict[str, Any]]


@closed
class SweepResult(TypedDict):
    """A policy sweep (``Sweep.to_json``): the ranking's accounting and latency, the Pareto
    table's points (``SweepPoint.to_dict``, mappings here) and every run in full."""

    accounting: str
    accounting_kind: str
    latency: str
    energy_method: str | None
    estimated: bool
    config: dict[str, Any]
    points: list[dict[str, Any]]
    runs: list[ShapedRun]
    engine: NotRequired[dict[str, Any]]


def validate_comparison(obj: object) -> ComparisonResult:
    """``obj`` checked against :class:`ComparisonResult`, every nested section included; a key
    the declarations do not name, or a value of the wrong type, raises pydantic's
    ``ValidationError``. Returns the same object, typed."""
    return check(ComparisonResult, obj)


def validate_sweep(obj: object) -> SweepResult:
    """``obj`` checked against :class:`SweepResult` (as :func:`validate_comparison`)."""
    return check(SweepResult, obj)
