"""The serving study of ``reproduce``: each scheduler × each arrival pattern, one stored load run.

For every scheduler the embedded server is started once (a fresh model load, so one scheduler
cannot leave state behind for the next), warmed up with unmeasured requests, its idle power
measured with the model loaded and quiet, then every arrival pattern of the plan is sent through
:func:`joulebench.load.runner.run_load` with the same meter. Each load is stored as a ``load``
run whose config names the arrival, the scheduler, the model and the precision, so the report
groups them; a run already ``done`` under the same name is skipped (resume). The optional shaping
comparison sends one trace directly and through the gateway (:func:`joulebench.shape.experiment.compare`).

Against an engine joulebench launched (``engine``, an
:class:`~joulebench.load.engines.session.EngineSession`, started once for both studies by
:func:`joulebench.reproduce.run.run_reproduce`), the plan's schedulers cannot be chosen: they are
the embedded server's, and the engine schedules requests itself. Each arrival pattern then runs
once, against the engine, its scheduler recorded as ``engine:<preset>``; the settings only the
embedded server takes (schedulers, precision, batch size, scheduler options, device) are not
applied, and a ``note`` event and the study's ``notes`` say so. Each run is watched (/metrics,
energy endpoint) and stored with the ``engine`` section; a run is not sent to an engine that has
exited (the study stops with its last log lines).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.window import measure_idle
from joulebench.progress import Emit
from joulebench.reproduce.plan import ServingPlan, ShapingPlan
from joulebench.results.loads import run_status, store_load

if TYPE_CHECKING:
    from joulebench.load.engines.session import EngineSession
    from joulebench.results.store import ResultStore
    from joulebench.shape.experiment import Comparison, Trial

log = logging.getLogger(__name__)

ServerFn = Callable[..., Any]  # joulebench.serve.launch.embedded_server's signature
LoadFn = Callable[..., Any]  # joulebench.load.runner.run_load's signature


def run_name(plan_name: str, study: str, scheduler: str, label: str) -> str:
    return f"reproduce-{plan_name}/{study}/{scheduler}/{label}"


def _done(store: ResultStore, name: str) -> bool:
    run_id = store.find_run("load", name)
    if run_id is None:
        return False
    rows = store.query("SELECT status FROM runs WHERE run_id = ?", [run_id])
    return bool(rows) and rows[0]["status"] == "done"


def _new_counts() -> dict[str, Any]:
    return {"total": 0, "done": 0, "skipped": 0, "failed": 0, "run_ids": []}


@dataclass(slots=True)
class _Progress:
    """One study's counts and events: each cell skipped (already done), started, done or failed."""

    study: str
    emit: Emit
    counts: dict[str, Any] = field(default_factory=_new_counts)

    def pending(self, store: ResultStore, name: str, label: str) -> bool:
        """Count the cell; False (and a ``skip`` event) when a ``done`` run has its name."""
        self.counts["total"] += 1
        if _done(store, name):
            self.counts["skipped"] += 1
            self.emit({"event": "skip", "study": self.study, "label": label})
            return False
        return True

    def started(self, label: str) -> None:
        self.emit({"event": "cell_start", "study": self.study, "label": label})

    def note(self, text: str) -> None:
        """Something of the plan that was not run or not applied, and why (never silently)."""
        self.counts.setdefault("notes", []).append(text)
        self.emit({"event": "note", "study": self.study, "note": text})

    def finished(
        self, label: str, run_ids: list[str], summary: dict[str, Any], *, ok: bool, error: str
    ) -> None:
        self.counts["run_ids"] += run_ids
        self.counts["done" if ok else "failed"] += 1
        self.emit(
            {
                "event": "done" if ok else "failed",
                "study": self.study,
                "label": label,
                "run_id": run_ids[-1],
                "summary": summary,
                "error": None if ok else error,
            }
        )


@dataclass(slots=True)
class ServingSetup:
    """What the serving and shaping studies share: the plan's name (run names start with it), the
    store and meter, the device and prompts, and where requests go: the embedded server (or
    ``server_fn``'s), or a launched ``engine`` (then only its URL is used)."""

    plan_name: str
    store: ResultStore
    meter: Meter
    device: str = "cpu"
    prompts: list[Any] | None = None
    server_fn: ServerFn | None = None
    on_event: Emit | None = None
    engine: EngineSession | None = None

    def progress(self, study: str) -> _Progress:
        """A study's counts, its events sent to ``on_event``."""
        return _Progress(study, self.on_event or (lambda e: None))

    def items(self, serving: ServingPlan) -> list[Any]:
        """The prompts given, else the plan's set (tokenized as its model's)."""
        return self.prompts if self.prompts is not None else _load_prompts(serving)

    def server(
        self, serving: ServingPlan, scheduler: str, options: dict[str, Any] | None = None
    ) -> Any:
        """The plan's embedded server (or ``server_fn``'s) for ``scheduler``: a context manager →
        URL; with a launched ``engine``, its URL (up already, stopped by its owner)."""
        if self.engine is not None:
            return contextlib.nullcontext(self.engine.plan.url)
        server_fn = self.server_fn
        if server_fn is None:
            from joulebench.serve.launch import embedded_server

            server_fn = embedded_server
        return server_fn(
            serving.model,
            serving.precision,
            scheduler,
            meter=self.meter,
            device=self.device,
            seed=serving.seed,
            max_batch_size=serving.max_batch_size,
            default_max_tokens=serving.output_length,
            **(options or {}),
        )

    def idle_power_w(self, serving: ServingPlan) -> float | None:
        """The idle baseline with the server up and quiet (``None``: the plan measures none)."""
        return measure_idle(self.meter, serving.idle_s).total_power_w if serving.idle_s else None

    def start(self, progress: _Progress, label: str) -> None:
        """Announce a cell; a launched engine that has exited stops the study here."""
        if self.engine is not None:
            self.engine.require_alive()
        progress.started(label)

    def store_run(
        self, info: MeterInfo, summary: dict[str, Any], *, name: str, config: dict[str, Any],
        requests: Any, timeline: Any,
    ) -> str:  # fmt: skip
        """Store one load as a ``load`` run with the meter's labels; returns its run id."""
        return store_load(
            self.store,
            summary,
            name=name,
            extra_config=config,
            meter_info=info.to_dict(),
            requests=requests,
            timeline=timeline,
            methods=dict(info.methods),
        )


def engine_scheduler(engine: EngineSession) -> str:
    """The scheduler label of runs against a launched engine (it schedules requests itself)."""
    return f"engine:{engine.plan.name}"


def _embedded_only(serving: ServingPlan, engine: EngineSession) -> str:
    schedulers = ", ".join(serving.schedulers)
    options = ", scheduler_options" if serving.scheduler_options else ""
    return (
        f"schedulers [{schedulers}] choose the embedded server's scheduler and a launched engine "
        f"schedules requests itself: the comparison between schedulers is skipped and each "
        f"arrival pattern runs once, against the engine (scheduler recorded as "
        f"'{engine_scheduler(engine)}'); precision {serving.precision}, max_batch_size "
        f"{serving.max_batch_size}{options} and the device configure the embedded server and "
        "are not applied (the engine's command decides them: engine.command)"
    )


def run_serving(
    setup: ServingSetup, serving: ServingPlan, *, load_fn: LoadFn | None = None
) -> dict[str, Any]:
    """Run (or resume) the serving grid into ``setup.store``; returns counts and the run ids (and
    ``notes``: what of the plan a launched engine cannot run)."""
    from joulebench.load.engines.session import measured

    if load_fn is None:
        from joulebench.load.runner import run_load

        load_fn = run_load
    progress = setup.progress("serving")
    info = MeterInfo.of(setup.meter)
    engine = setup.engine
    items = setup.items(serving)
    schedulers = serving.schedulers
    if engine is not None:
        progress.note(_embedded_only(serving, engine))
        schedulers = [engine_scheduler(engine)]
    for scheduler in schedulers:
        todo = []
        for arrival in serving.arrivals:
            name = run_name(setup.plan_name, "serving", scheduler, arrival)
            if progress.pending(setup.store, name, f"{arrival} · {scheduler}"):
                todo.append((arrival, name))
        if not todo:
            continue
        options = dict(serving.scheduler_options.get(scheduler, {}))
        with setup.server(serving, scheduler, options) as url:
            common: dict[str, Any] = {"prompts": items, **serving.load_settings()}
            if serving.warmup_n:
                load_fn(url, serving.protocol, "burst", n=serving.warmup_n, **common)
            idle_w = setup.idle_power_w(serving)
            for arrival, name in todo:
                label = f"{arrival} · {scheduler}"
                setup.start(progress, label)
                result, summary = measured(
                    engine,
                    functools.partial(
                        load_fn, url, serving.protocol, arrival, n=serving.n, meter=setup.meter,
                        idle_power_w=idle_w, **common,
                    ),
                )  # fmt: skip
                run_id = setup.store_run(
                    info, summary, name=name,
                    config=_config(setup.plan_name, serving, scheduler, "serving", engine),
                    requests=result.request_rows(), timeline=result.timeline,
                )  # fmt: skip
                req = summary["requests"]
                ok = bool(req["ok"]) and req["ok"] == req["total"]
                progress.finished(
                    label, [run_id], summary, ok=ok,
                    error=f"{req['total'] - req['ok']} of {req['total']} requests failed or were "
                    "truncated",
                )  # fmt: skip
    return progress.counts


def _config(
    plan_name: str,
    serving: ServingPlan,
    scheduler: str,
    study: str,
    engine: EngineSession | None = None,
) -> dict[str, Any]:
    return {
        "study": study,
        "plan": plan_name,
        "scheduler": scheduler,
        "model": serving.model,
        # the embedded server's precision; a launched engine's is its command's
        "precision": serving.precision if engine is None else None,
        "prompts": serving.prompts,
        "target": "embedded" if engine is None else "engine",
    }


def _load_prompts(serving: ServingPlan) -> list[Any]:
    from joulebench.workloads.models import load_tokenizer
    from joulebench.workloads.prompts import load_prompts

    tok = load_tokenizer(serving.model)
    return list(load_prompts(serving.prompts, n=serving.n, seed=serving.seed, tokenizer=tok))


def run_shaping(
    setup: ServingSetup,
    shaping: ShapingPlan,
    serving: ServingPlan,
    *,
    compare_fn: Callable[[Trial, str], Comparison] | None = None,
) -> dict[str, Any]:
    """One trace directly and through each policy, against the ``shaping.scheduler`` server (or
    the launched engine: ``shaping.scheduler`` is then not applied, and a note says so).

    Both runs of a comparison are stored as ``load`` runs (the shaped one with ``via_shape``), so
    the report's arrival and Pareto figures show them side by side.
    """
    from joulebench.shape.experiment import Trial, compare

    if compare_fn is None:
        compare_fn = compare
    progress = setup.progress("shaping")
    engine = setup.engine
    scheduler = shaping.scheduler
    if engine is not None:
        scheduler = engine_scheduler(engine)
        progress.note(
            f"scheduler {shaping.scheduler} is the embedded server's: the shaping comparison "
            f"runs against the launched engine (scheduler recorded as '{scheduler}')"
        )
    todo = []
    for policy in shaping.policies:
        label = f"{shaping.arrival} via {policy}"
        name = run_name(setup.plan_name, "shaping", scheduler, label)
        if progress.pending(setup.store, name, label):
            todo.append((policy, name))
    if not todo:
        return progress.counts
    info = MeterInfo.of(setup.meter)
    items = setup.items(serving)
    with setup.server(serving, scheduler) as url:
        idle_w = setup.idle_power_w(serving)
        for policy, name in todo:
            label = f"{shaping.arrival} via {policy}"
            setup.start(progress, label)
            trial = Trial(
                url, shaping.arrival, items, shaping.n, protocol=serving.protocol,
                max_delay_ms=shaping.max_delay_ms, meter=setup.meter, idle_power_w=idle_w,
                warmup_n=serving.warmup_n, engine=engine, **serving.load_settings(),
            )  # fmt: skip
            comp = compare_fn(trial, policy)
            base = _config(setup.plan_name, serving, scheduler, "shaping", engine)
            ids = [
                setup.store_run(
                    info,
                    run.load,
                    name=f"{name}/direct" if via is None else name,
                    config={**base, "via_shape": via, "shape_policy": comp.policy},
                    requests=run.requests,
                    timeline=run.timeline,
                )
                for run, via in ((comp.direct, None), (comp.shaped, policy))
            ]
            ok = all(run_status(r.load) == "done" for r in (comp.direct, comp.shaped))
            progress.finished(
                label, ids, comp.shaped.load, ok=ok, error="requests failed or were truncated"
            )
    return progress.counts
