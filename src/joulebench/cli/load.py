"""``joulebench load``: a load test against any server (or the embedded one), energy accounted.

Without ``--url`` (or with ``--embedded``) it starts joulebench's own server with the default
tiny model, in this process, so the same meter sees the server's work.

Per-request energy appears twice in ``--json`` and the two are not the same quantity:

- ``energy.per_request_j.attributed_mean`` is the load generator's own attribution
  (``energy.attribution_method`` = ``timeline-token-share``): the power timeline of the whole
  window shared among in-flight requests by token work, idle gaps spread over the requests, so
  the per-request figures sum to ``energy.gross_j``;
- ``energy.server_reported`` (``sum_j``, ``mean_j``, ``n``, ``methods``) sums what the server put in
  its responses. joulebench serve charges busy forward steps only (``timeline-token-work``; idle
  waits go to no one), so its sum is at most ``energy.busy_j``, the timeline's energy while a
  request was in flight, itself at most ``gross_j``. ``over_busy`` and ``over_gross`` give the
  ratios; on the embedded server the gap to ``busy_j`` is the server's work outside forward steps
  (HTTP, tokenization, streaming) while requests were in flight.

``--via-shape POLICY`` runs the same seeded trace directly and through the shaping gateway, same
server and meter, and prints them side by side (:mod:`joulebench.shape.experiment`); with
``--store`` both runs are kept as ``load`` runs (the shaped one with ``via_shape``).

A stored run's status says whether it finished whole: ``done`` (every request ended properly),
``partial`` (some failed, timed out or were truncated: counted, never averaged in), ``failed``
(none succeeded) or ``interrupted`` (Ctrl-C). The exit status is 1 when any request was lost
(``--max-failed-rate R`` allows a share R). ``--store`` is opened, and so locked, before the first
request. Audit verdicts never change the status: they are in the audits table and in the
summary's ``audits`` (``passed``, ``failed`` check names).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from joulebench.cli.common import err_console, handle_errors, print_json
from joulebench.cli.engine_options import (
    NO_LAUNCH,
    engine_flags,
    launched,
    plan_launch,
    print_engine,
)
from joulebench.cli.load_options import (
    DEFAULT_REPORT,
    EMBEDDED_SERVER,
    NO_SERVER_FLAGS,
    ArrivalOpt,
    ConcurrencyOpt,
    EmbeddedOpt,
    EmbeddedServerFlags,
    ModelOpt,
    NOpt,
    ProtocolOpt,
    ReportFlags,
    SeedOpt,
    TimeoutOpt,
    UrlOpt,
    ViaShapeOpt,
    embedded_server_flags,
    report_flags,
)
from joulebench.cli.load_views import print_table
from joulebench.cli.meter_options import (
    AUTO_METER,
    HzOpt,
    IdleOpt,
    MeterChoice,
    current_gpus,
    meter_flags,
)
from joulebench.cli.workload_options import (
    OutputLengthOpt,
    PromptsOpt,
    describe_output_length,
    output_lengths,
    read_prompts,
)
from joulebench.errors import ConfigError
from joulebench.load.arrivals import parse_arrival
from joulebench.load.clients import PROTOCOLS, Tokenizer
from joulebench.load.engines.session import LaunchOptions
from joulebench.load.runner import LoadResult, run_load
from joulebench.meters.window import measure_idle
from joulebench.results.loads import (
    lost_requests,
    open_store,
    store_comparison,
    store_interrupted,
    store_load_result,
)
from joulebench.workloads.output_length import OutputLength

if TYPE_CHECKING:
    from joulebench.load.engines.session import EngineSession
    from joulebench.meters.base import Meter
    from joulebench.results.store import ResultStore
    from joulebench.shape.experiment import Comparison

log = logging.getLogger(__name__)


def _load_tokenizer(model: str | None) -> Any:
    if not model:
        return None
    try:
        from joulebench.workloads.models import load_tokenizer

        return load_tokenizer(model)
    except Exception as exc:  # hub ids offline, missing extra: counts then come from `usage`
        log.warning(
            "no tokenizer for %s (%s): token counts come from the server's usage", model, exc
        )
        return None


def _counter(tok: Any) -> Tokenizer | None:
    if tok is None:
        return None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


@contextlib.contextmanager
def _target(
    url: str | None,
    embedded: bool,
    model: str | None,
    meter: Any,
    server: dict[str, Any] | None = None,
) -> Iterator[str]:
    if url and not embedded:
        yield url.rstrip("/")
        return
    if url and embedded:
        raise ConfigError("pass either --url or --embedded, not both")
    from joulebench.serve.launch import embedded_server

    with embedded_server(model=model or "tiny", meter=meter, **(server or EMBEDDED_SERVER)) as base:
        yield base


@dataclass(slots=True)
class LoadRun:
    """What one ``load`` command runs, as parsed from its flags."""

    url: str | None
    embedded: bool
    model: str | None
    server: dict[str, Any]
    via_shape: str | None
    arrival: str
    process: Any
    items: list[Any]
    lengths: int | list[int]
    forced: bool
    report: ReportFlags
    idle_s: float
    n: int
    protocol: str
    concurrency: int | None
    timeout_s: float
    seed: int
    tok: Any
    hz: float
    prompts: str
    output_length: str
    cli_config: dict[str, Any] = field(default_factory=dict)
    launch_plan: Any = None

    def sent_model(self, session: EngineSession | None) -> str | None:
        """The model name sent to the server: only to a server behind ``--url``."""
        return self.model if self.url and not session else None


def _cli_config(run: LoadRun) -> dict[str, Any]:
    """The command's settings recorded in the run's config."""
    return {
        "target": "url" if run.url else "embedded",
        "prompts": run.prompts,
        "output_length_policy": describe_output_length(run.output_length),
        # the report groups load runs by scheduler; an external server's is unknown to us
        **(
            {"scheduler": "external server"}
            if run.url
            else {**run.server, "server_model": run.model or "tiny"}
        ),
    }


@handle_errors
@meter_flags(estimate_scope="auto")
@engine_flags
@embedded_server_flags
@report_flags
def load(
    url: UrlOpt = None,
    embedded: EmbeddedOpt = False,
    protocol: ProtocolOpt = "openai-chat",
    arrival: ArrivalOpt = "burst",
    n: NOpt = 32,
    prompts: PromptsOpt = "quick",
    output_length: OutputLengthOpt = "natural:64",
    concurrency: ConcurrencyOpt = None,
    seed: SeedOpt = 0,
    timeout_s: TimeoutOpt = 120.0,
    model: ModelOpt = None,
    server: EmbeddedServerFlags = NO_SERVER_FLAGS,
    report: ReportFlags = DEFAULT_REPORT,
    meter: MeterChoice = AUTO_METER,
    idle_s: IdleOpt = 0.0,
    hz: HzOpt = 10.0,
    via_shape: ViaShapeOpt = None,
    launching: LaunchOptions = NO_LAUNCH,
) -> None:
    """Send N requests on an arrival schedule; report latency and four energy accountings."""
    # --gpus and --allow-missing-gpu come as to every measuring command (add_gpu_options): the
    # meter's GPUs, and the launched engine's (its CUDA_VISIBLE_DEVICES) through current_gpus()
    if protocol not in PROTOCOLS:
        from joulebench.errors import UnknownName

        raise UnknownName("protocol", protocol, list(PROTOCOLS))
    process = parse_arrival(arrival, seed=seed)  # bad specs fail before anything starts
    launch_plan = plan_launch(
        launching, url=url, model=model, gpus=current_gpus(), store=report.store,
        meter=meter.spec, fake_power_w=meter.options.get("fake_power_w", 100.0),
    )  # fmt: skip
    url = launch_plan.url if launch_plan is not None else url
    settings = server.settings(url, embedded)
    if via_shape:
        from joulebench.shape.policies import parse_policy

        parse_policy(via_shape)  # a typo fails before the server starts
    tok = _load_tokenizer(model) if url else None  # embedded: the set's default (tiny) tokenizer
    items, refs = read_prompts(prompts, n=n, seed=seed, tokenizer=tok)
    run = LoadRun(
        url=url, embedded=embedded, model=model, server=settings, via_shape=via_shape,
        arrival=arrival, process=process, items=items, lengths=output_lengths(output_length, refs),
        forced=OutputLength.parse(output_length).kind != "natural",  # N or reference: min = max
        report=report, idle_s=idle_s, n=n, protocol=protocol, concurrency=concurrency,
        timeout_s=timeout_s, seed=seed, tok=tok, hz=hz, prompts=prompts,
        output_length=output_length, launch_plan=launch_plan,
    )  # fmt: skip
    run.cli_config = _cli_config(run)
    with open_store(report.store) as db:  # opened and locked before anything is measured
        # the estimator's scope: the server behind --url or this process
        _run_and_report(db, run, meter.for_url(url))


def _compare(run: LoadRun, base: str, m: Meter, session: EngineSession | None) -> Comparison:
    """``--via-shape``: run the comparison (``joulebench.shape.experiment``): direct vs
    shaped, same trace, server and meter; a launched engine is watched during each run."""
    from joulebench.shape.experiment import Trial, compare

    assert run.via_shape is not None
    trial = Trial(
        base,
        run.arrival,
        run.items,
        run.n,
        meter=m,
        idle_s=run.idle_s,
        engine=session,
        output_length=run.lengths,
        load_options={
            "model": run.sent_model(session),
            "tokenizer": _counter(run.tok),
            "timeline_hz": run.hz,
        },
        protocol=run.protocol,
        concurrency=run.concurrency,
        timeout_s=run.timeout_s,
        seed=run.seed,
    )
    return compare(trial, run.via_shape)


def _run_one(
    db: ResultStore | None, run: LoadRun, base: str, m: Meter, session: EngineSession | None
) -> LoadResult:
    """Measure the idle baseline and run the load; Ctrl-C is recorded as an ``interrupted`` run."""
    # a launched engine has its model loaded now: the baseline is idle, not empty
    idle_w = measure_idle(m, run.idle_s).total_power_w if run.idle_s > 0 else None
    try:
        with session.watching() if session else contextlib.nullcontext():
            return run_load(
                base, run.protocol, run.process, run.items, n=run.n, output_length=run.lengths,
                concurrency=run.concurrency, timeout_s=run.timeout_s, meter=m,
                idle_power_w=idle_w, seed=run.seed, model=run.sent_model(session),
                tokenizer=_counter(run.tok), timeline_hz=run.hz, forced=run.forced,
            )  # fmt: skip
    except KeyboardInterrupt:
        if db is not None:
            cfg = {**run.cli_config, "url": base, "protocol": run.protocol, "n": run.n}
            cfg["arrival"] = run.process.describe()
            if session is not None:
                cfg["engine"] = session.engine.to_dict()
            run_id = store_interrupted(db, cfg, run.report.name)
            err_console.print(f"interrupted: recorded as run {run_id} in {run.report.store}")
        raise


def _run_and_report(db: ResultStore | None, run: LoadRun, meter: MeterChoice) -> None:
    """Open the meter, (launch the engine,) run the load (or the via-shape comparison), stop the
    engine, store, print, exit status."""
    m = meter.open()
    comparison = result = session = None
    try:
        with (
            launched(run.launch_plan) as session,
            _target(run.url, run.embedded, run.model, m, run.server) as base,
        ):
            if run.via_shape:
                comparison = _compare(run, base, m, session)
            else:
                result = _run_one(db, run, base, m, session)
    finally:
        m.close()
    if comparison is not None:
        _report_comparison(db, run, comparison, session)
    else:
        assert result is not None  # run_load returned, or its exception left above
        _report_load(db, run, result, session)


def _report_comparison(
    db: ResultStore | None, run: LoadRun, comparison: Comparison, session: EngineSession | None
) -> None:
    """Print and store both runs of a ``--via-shape`` comparison (after a launched engine
    stopped: its exit status is in both); exit status 1 when either lost requests."""
    from joulebench.cli.shape_views import show_comparison
    from joulebench.shape.experiment import stamp_engine

    comparison.config.update(
        prompts=run.prompts, output_length=describe_output_length(run.output_length)
    )
    cli_config = run.cli_config
    if session is not None:  # stopped now: its exit status is known
        stamp_engine(comparison, session)
        cli_config = {**cli_config, "engine": session.engine.to_dict()}
    show_comparison(comparison, run.report.as_json)
    if not run.report.as_json:
        print_engine(comparison.to_json())
    runs = (comparison.direct, comparison.shaped)
    if db is not None:
        ids = store_comparison(db, comparison, cli_config, run.report.name)
        err_console.print(f"stored as runs {', '.join(ids)} (direct, shaped) in {run.report.store}")
    lost = [
        f"{label}: {w}"
        for label, r in zip(("direct", "shaped"), runs, strict=True)
        if (w := lost_requests(r.load["requests"], run.report.max_failed_rate))
    ]
    if lost:
        err_console.print(f"[bold red]incomplete run:[/] {escape('; '.join(lost))}")
        raise typer.Exit(1)


def _report_load(
    db: ResultStore | None, run: LoadRun, result: LoadResult, session: EngineSession | None
) -> None:
    """Store and print one load; exit status 1 when it lost more requests than allowed."""
    j = result.to_json()
    j["config"].update(run.cli_config)
    j["config"]["max_failed_rate"] = run.report.max_failed_rate
    if session is not None:  # stopped now: exit status, metrics, server-energy audit
        session.annotate(j, result.records, result.timeline)
    if db is not None:
        j["run_id"] = store_load_result(db, result, j, run.report.name)
    if run.report.as_json:
        print_json(j)
    else:
        print_table(j)
        print_engine(j)
        if db is not None:
            err_console.print(f"stored as run {j['run_id']} in {run.report.store}")
    why = lost_requests(j["requests"], run.report.max_failed_rate)
    if why:
        status = "stored as partial: " if db is not None and j["requests"]["ok"] else ""
        err_console.print(f"[bold red]incomplete run:[/] {status}{escape(why)}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("load")(load)
