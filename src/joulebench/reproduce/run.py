"""``reproduce``: run a plan's studies into one store, then write the report.

Order: precision sweep, batch sweep (both :func:`joulebench.profile.sweep.run_sweep`, resumable by
their names ``reproduce-<plan>-<study>``), the serving grid, the optional shaping comparison
(:mod:`joulebench.reproduce.serving`), then :func:`joulebench.report.build.build_report` and the
headline numbers (:mod:`joulebench.reproduce.summary`). One meter measures everything; its
method labels travel with every stored number. A study that fails as a whole (its server does not
start, say) is recorded in the result and the next study still runs.

With a launch plan (``reproduce --launch CMD`` / ``--engine NAME``) the serving and shaping
studies run against that engine instead of the embedded server: it is started once, after the
sweeps, waited for, and stopped after the shaping comparison, on failure and on Ctrl-C too
(:func:`joulebench.load.engines.session.engine_session`). Each study measures idle with the
model loaded; what only the embedded server can do is skipped with a stated reason
(:mod:`joulebench.reproduce.serving`). The result's ``engine`` and every stored run's summary
carry the engine section, its exit status included.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.errors import ConfigError, JoulebenchError
from joulebench.meters.base import Meter, MeterInfo
from joulebench.progress import Emit, ProgressEvent
from joulebench.reproduce.plan import ReproducePlan
from joulebench.reproduce.summary import Headline, audit_failures, headlines

if TYPE_CHECKING:
    from joulebench.analysis.roofline import HardwarePeak
    from joulebench.load.engines.session import EngineSession, LaunchPlan
    from joulebench.reproduce.serving import ServingSetup
    from joulebench.results.store import ResultStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReproduceResult:
    """What a reproduce run did and wrote."""

    plan: str
    store: Path
    index_html: Path | None
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    headlines: list[Headline] = field(default_factory=list)
    audit_failures: int = 0
    audit_failed_checks: dict[str, int] = field(default_factory=dict)
    meter_methods: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    figures: list[str] = field(default_factory=list)
    missing_figures: list[str] = field(default_factory=list)
    engine: dict[str, Any] | None = None  # the launched engine's process section, if any

    @property
    def estimated(self) -> bool:
        return "estimated" in self.meter_methods.values()

    @property
    def failed_studies(self) -> list[str]:
        return [k for k, v in self.studies.items() if v.get("error") or v.get("failed")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "store": str(self.store),
            "index_html": None if self.index_html is None else str(self.index_html),
            "studies": self.studies,
            "headlines": [h.to_dict() for h in self.headlines],
            "audit_failures": self.audit_failures,
            "audit_failed_checks": self.audit_failed_checks,
            "meter_methods": self.meter_methods,
            "estimated": self.estimated,
            "duration_s": self.duration_s,
            "figures": self.figures,
            "missing_figures": self.missing_figures,
            **({} if self.engine is None else {"engine": self.engine}),
        }


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def check_device(
    plan: ReproducePlan, *, force: bool = False, gpu: Callable[[], bool] = cuda_available
) -> ReproducePlan:
    """Refuse a GPU plan without a GPU (``force``: run it on the CPU instead, and say so)."""
    if not plan.needs_gpu or gpu():
        return plan
    if not force:
        raise ConfigError(
            f"plan '{plan.name}' runs the study's models on a CUDA GPU ({plan.device}) and none is "
            "visible here (torch.cuda.is_available() is False). Use --quick on a CPU, or --force "
            "to run this plan on the CPU anyway (hours to days, and large models may not fit)."
        )
    log.warning("plan %s is meant for a GPU; --force runs it on the CPU", plan.name)
    return plan.model_copy(update={"device": "cpu"})


def _run_sweeps(
    plan: ReproducePlan,
    store: ResultStore,
    meter: Meter,
    emit: Emit,
    hardware: HardwarePeak | None,
) -> dict[str, dict[str, Any]]:
    from joulebench.profile.sweep import run_sweep

    out: dict[str, dict[str, Any]] = {}
    for study, sweep in plan.sweeps().items():

        def relay(e: ProgressEvent, study: str = study) -> None:
            emit({**e, "study": study})

        emit({"event": "study_start", "study": study, "total": len(sweep.cells())})
        summary = run_sweep(sweep, store, meter, on_event=relay, hardware=hardware)
        # profile_cell labels its cells "profile"; the report groups by the sweep's study.
        store.set_cells_study(summary["run_id"], study)
        out[study] = dict(summary)  # a study's outcome, beside the serving studies' counts
    return out


def run_reproduce(
    plan: ReproducePlan,
    *,
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    meter: Meter,
    on_event: Emit | None = None,
    hardware: HardwarePeak | None = None,
    server_fn: Callable[..., Any] | None = None,
    launch: LaunchPlan | None = None,
) -> ReproduceResult:
    """Run ``plan`` (already checked by :func:`check_device`) into ``store_path``, then report;
    ``launch``: the engine the serving studies run against instead of the embedded server."""
    from joulebench.analysis.records import read_store
    from joulebench.report.build import build_report
    from joulebench.results.store import ResultStore, check_writable

    emit = on_event or (lambda e: None)
    store_file = check_writable(store_path)
    t0 = time.monotonic()
    studies: dict[str, dict[str, Any]] = {}
    engine = None
    with ResultStore(store_file) as db:
        studies.update(_run_sweeps(plan, db, meter, emit, hardware))

        def against(session: EngineSession | None) -> dict[str, dict[str, Any]]:
            from joulebench.reproduce.serving import ServingSetup

            setup = ServingSetup(
                plan.name, db, meter, device=plan.device, server_fn=server_fn, on_event=emit,
                engine=session,
            )  # fmt: skip
            return _serving_studies(plan, setup, emit)

        if launch is None:
            studies.update(against(None))
        else:
            found, engine = _against_engine(launch, plan, db, emit, against)
            studies.update(found)
    emit({"event": "report_start"})
    report = build_report(store_file, out_dir, title=f"joulebench reproduce — {plan.name}")
    with ResultStore(store_file, read_only=True) as db:
        contents = read_store(db)
    failed = audit_failures(contents, plan.name)
    checks: dict[str, int] = {}
    for a in failed:
        name = str(a.get("check_name") or a.get("name") or "?")
        checks[name] = checks.get(name, 0) + 1
    return ReproduceResult(
        plan=plan.name,
        store=store_file,
        index_html=report.index_html,
        studies=studies,
        headlines=headlines(contents, plan.name),
        audit_failures=len(failed),
        audit_failed_checks=dict(sorted(checks.items())),
        meter_methods=dict(MeterInfo.of(meter).methods),
        duration_s=time.monotonic() - t0,
        figures=[f.key for f in report.figures],
        missing_figures=[f"{m.key}: {m.reason}" for m in report.missing],
        engine=engine,
    )


def _serving_studies(
    plan: ReproducePlan, setup: ServingSetup, emit: Emit
) -> dict[str, dict[str, Any]]:
    """The serving grid and the shaping comparison (against ``setup.engine`` when launched)."""
    from joulebench.reproduce.serving import run_serving, run_shaping

    out: dict[str, dict[str, Any]] = {}
    serving, shaping = plan.serving, plan.shaping
    if serving is not None:
        schedulers = 1 if setup.engine is not None else len(serving.schedulers)
        out["serving"] = _guarded(
            "serving",
            emit,
            schedulers * len(serving.arrivals),
            lambda: run_serving(setup, serving),
        )
    if shaping is not None and serving is not None:
        out["shaping"] = _guarded(
            "shaping",
            emit,
            len(shaping.policies),
            lambda: run_shaping(setup, shaping, serving),
        )
    return out


def serving_studies(plan: ReproducePlan) -> list[str]:
    """The studies of ``plan`` that send requests to a server (what a launched engine serves)."""
    if plan.serving is None:
        return []
    return ["serving"] + (["shaping"] if plan.shaping is not None else [])


def _against_engine(
    launch: LaunchPlan,
    plan: ReproducePlan,
    db: Any,
    emit: Emit,
    run: Callable[[EngineSession], dict[str, dict[str, Any]]],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """``run`` (the serving studies) against the engine ``launch`` starts (once; stopped on any
    exit), and its final ``engine`` section, also written into each stored run's summary. An
    engine that never serves fails both studies with its last log lines."""
    from joulebench.load.engines.process import EngineNotReady
    from joulebench.load.engines.session import engine_session

    emit({"event": "engine_start", "engine": launch.name, "log": str(launch.log_path)})
    try:
        with engine_session(launch) as session:
            ready = session.engine
            emit({"event": "engine_ready", "url": launch.url, "ready_s": ready.ready_s,
                  "pid": ready.pid})  # fmt: skip
            studies = run(session)
    except EngineNotReady as exc:  # it never served (one that dies later fails its study)
        error = f"{type(exc).__name__}: {exc}"
        for study in serving_studies(plan):
            emit({"event": "study_failed", "study": study, "error": error})
        return {s: {"error": error, "failed": 1} for s in serving_studies(plan)}, None
    section = session.describe()
    emit({"event": "engine_stopped", "exit_code": section["exit_code"],
          "stopped_by": section["stopped_by"], "log": section["log_file"]})  # fmt: skip
    for counts in studies.values():  # stopped now: its exit status goes into the stored runs
        for run_id in counts.get("run_ids") or []:
            rows = db.query("SELECT summary FROM runs WHERE run_id = ?", [run_id])
            summary = json.loads(rows[0]["summary"]) if rows and rows[0]["summary"] else {}
            session.stamp(summary)
            db.set_run_summary(run_id, summary)
    return studies, section


def _guarded(
    study: str, emit: Emit, total: int, fn: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run a whole study of ``total`` cells; a failure that stops it (server start, model load)
    is recorded."""
    emit({"event": "study_start", "study": study, "total": total})
    try:
        return fn()
    except (JoulebenchError, RuntimeError, OSError, ValueError, ImportError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning("%s study stopped: %s", study, error)
        emit({"event": "study_failed", "study": study, "error": error})
        return {"error": error, "failed": 1}
