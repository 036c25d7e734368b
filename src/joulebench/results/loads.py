"""Load tests in the results store: one ``load`` run per load test, with its status.

``store_load`` writes a load's summary (``LoadResult.to_json()``), its per-request rows, its power
timeline and its audits as one ``load`` run; ``run_status`` says whether the load was whole.
Used by ``joulebench load``, ``shape-compare`` and the reproduce plans alike.
"""

from __future__ import annotations

from typing import Any


def run_status(summary: dict[str, Any]) -> str:
    """``done`` when every request of a load summary ended properly, ``partial`` when some
    failed, timed out or were truncated, ``failed`` when none succeeded. Audit verdicts never
    count (they live in the audits table and the summary's ``audits``)."""
    requests = summary.get("requests") or {}
    ok, total = int(requests.get("ok") or 0), int(requests.get("total") or 0)
    if not ok:
        return "failed"
    return "done" if ok == total else "partial"


def store_load(
    store: Any,
    summary: dict[str, Any],
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
