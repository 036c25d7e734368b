"""Load tests in the results store: one ``load`` run per load test, with its status.

``store_load`` writes a load's summary (``LoadResult.to_json()``), its per-request rows, its power
timeline and its audits as one ``load`` run; ``run_status`` says whether the load was whole and
``lost_requests`` whether it lost more than allowed (the CLI's exit status). Used by ``joulebench
load``, ``shape-compare`` and the reproduce plans alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joulebench.load.runner import LoadResult
    from joulebench.results.load_summary import LoadSummary
    from joulebench.results.store import ResultStore


def run_status(summary: Mapping[str, Any]) -> str:
    """``done`` when every request of a load summary ended properly, ``partial`` when some
    failed, timed out or were truncated, ``failed`` when none succeeded. Audit verdicts never
    count (they live in the audits table and the summary's ``audits``)."""
    requests = summary.get("requests") or {}
    ok, total = int(requests.get("ok") or 0), int(requests.get("total") or 0)
    if not ok:
        return "failed"
    return "done" if ok == total else "partial"


def store_load(
    store: ResultStore,
    summary: Mapping[str, Any],
    *,
    name: str | None,
    extra_config: dict[str, Any],
    meter_info: dict[str, Any] | None,
    requests: list[dict[str, Any]] | None = None,
    timeline: Any = None,
    methods: dict[str, str] | None = None,
) -> str:
    """Store one load test (``LoadResult.to_json()``) as a ``load`` run; returns its id.

    The run is ``done`` even when an audit fails: failures go to the audits table, where the CLI
    and the report show them (a failing check must be visible, not drop the run from figures).
    Its status is :func:`run_status`'s: a ``partial`` or ``failed`` run is redone on resume.
    """
    from joulebench.environment import collect_environment

    config = {**(summary.get("config") or {}), **extra_config}
    run_id = store.start_run(
        "load", config=config, environment=collect_environment(), meter=meter_info, name=name
    )
    if requests:
        store.add_requests(run_id, requests)
    if timeline and methods:
        store.add_timeline(run_id, timeline, methods)
    audits = (summary.get("energy") or {}).get("audits") or []
    store.add_audits(run_id, None, audits)
    store.finish_run(
        run_id, status=run_status(summary), summary={**summary, "config": config, "run_id": run_id}
    )
    return run_id


def store_load_result(db: ResultStore, result: LoadResult, j: LoadSummary, name: str | None) -> str:
    """Store one load as a ``load`` run in the open store ``db`` (its status from
    :func:`joulebench.results.loads.run_status`; audit verdicts never change it)."""
    return store_load(
        db,
        j,
        name=name,
        extra_config=result.config,
        meter_info=result.meter.to_dict() if result.meter else None,
        requests=result.request_rows(),
        timeline=result.timeline,
        methods=dict(result.meter.methods) if result.meter else None,
    )


def store_interrupted(db: Any, config: dict[str, Any], name: str | None) -> str:
    """Record a load stopped by Ctrl-C as an ``interrupted`` run (config only, no numbers)."""
    from joulebench.environment import collect_environment

    run_id = db.start_run("load", config=config, environment=collect_environment(), name=name)
    db.finish_run(run_id, status="interrupted", summary={"run_id": run_id, "config": config})
    return run_id


@contextlib.contextmanager
def open_store(path: Path | None) -> Iterator[Any]:
    """The results store, opened (and so locked by DuckDB) before the first request is sent: a
    store another process holds fails now, not after a finished load is thrown away."""
    if path is None:
        yield None
        return
    from joulebench.results.store import ResultStore, check_writable

    check_writable(path)
    with ResultStore(path) as db:
        yield db


def lost_requests(requests: Mapping[str, Any], max_failed_rate: float) -> str | None:
    """Why a load's exit status is non-zero (requests failed or truncated beyond the allowed
    rate, or none succeeded), or ``None`` when it is whole enough."""
    total, ok = int(requests.get("total") or 0), int(requests.get("ok") or 0)
    lost = total - ok
    if total and not ok:
        return f"no request succeeded ({lost} of {total} failed or truncated)"
    if lost and lost / total > max_failed_rate:
        return (
            f"{lost} of {total} requests failed or were truncated "
            f"({requests.get('truncated', 0)} truncated, {requests.get('timed_out', 0)} timed "
            f"out); allowed: {max_failed_rate:.1%} (--max-failed-rate)"
        )
    return None


def store_comparison(
    db: Any, comparison: Any, config: dict[str, Any], name: str | None
) -> list[str]:
    """Both runs of a ``--via-shape`` comparison as ``load`` runs, per-request rows and timeline
    included; the shaped one carries ``via_shape`` (the report's Pareto figure pairs them)."""
    ids = []
    for run, via in ((comparison.direct, None), (comparison.shaped, comparison.policy)):
        label = "direct" if via is None else "shaped"
        ids.append(
            store_load(
                db,
                run.load,
                name=f"{name}/{label}" if name else None,
                extra_config={**config, "via_shape": via, "shape_policy": comparison.policy},
                meter_info=run.load.get("meter"),
                requests=run.requests,
                timeline=run.timeline,
                methods=run.load.get("meter_methods") or None,
            )
        )
    return ids
