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

A stored run's status says whether it finished: ``done`` (at least one request succeeded),
``failed`` (none did) or ``interrupted`` (Ctrl-C). Audit verdicts never change it: they are in
the audits table and in the summary's ``audits`` (``passed``, ``failed`` check names).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from joulebench.cli.common import console, err_console, handle_errors, print_json
from joulebench.cli.meter_options import (
    CountryOpt,
    CpuIdleOpt,
    CpuTdpOpt,
    FakePowerOpt,
    HzOpt,
    IdleOpt,
    IsolatedOpt,
    MeterOpt,
    NvmlModeOpt,
    PrometheusOpt,
    RamOpt,
    ReplayOpt,
    open_cli_meter,
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
from joulebench.load.runner import LoadResult, run_load
from joulebench.meters.window import measure_idle

log = logging.getLogger(__name__)

#: How ``load`` without ``--url`` starts joulebench's server (recorded in the run's config).
EMBEDDED_SERVER: dict[str, Any] = {"precision": "fp32", "scheduler": "continuous"}

ACCOUNTING_TITLES = {
    "paper_whole_window": "whole window ÷ successful (study)",
    "idle_subtracted": "idle-subtracted",
    "steady_state": "steady-state window",
    "attributed_mean": "per-request attribution (mean)",
}


def _url_port(url: str) -> int:
    """The TCP port a server URL points at (its scheme's default when none is written)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


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


def print_table(j: dict[str, Any]) -> None:
    req = j["requests"]
    console.print(
        f"[bold]{req['ok']}[/] ok, [bold red]{req['failed']}[/] failed "
        f"({req['timed_out']} timed out) in {j['duration_s']:.2f} s; "
        f"target {_fmt(j['target_rate_rps'])} req/s, achieved {_fmt(j['achieved_rate_rps'])} req/s"
    )
    for err, count in req["errors"].items():
        console.print(f"  [red]{count}×[/] {err}")
    lat = Table("latency (ms, successful only)", "p50", "p90", "p99", title="Latency")
    for key in ("schedule_lag_ms", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queue_ms"):
        s = j[key]
        lat.add_row(key.removesuffix("_ms"), _fmt(s["p50"]), _fmt(s["p90"]), _fmt(s["p99"]))
    console.print(lat)
    e = j["energy"]
    if e.get("gross_j") is None:
        console.print(f"energy: {e.get('note')}")
        return
    table = Table("accounting", "Wh / request", "J / request", "how", title="Energy per request")
    for key, title in ACCOUNTING_TITLES.items():
        table.add_row(
            title,
            _fmt(e["per_request_wh"][key]),
            _fmt(e["per_request_j"][key]),
            e["accountings"][key],
        )
    console.print(table)
    spread = e.get("attributed_spread_j")
    if spread and spread["n"]:
        console.print(
            f"attributed J / request over {spread['n']} successful: p50 {_fmt(spread['p50'])}, "
            f"p90 {_fmt(spread['p90'])}, p99 {_fmt(spread['p99'])}"
        )
    console.print(
        f"gross {e['gross_j']:.4g} J, net {_fmt(e['net_j'])} J over {e['window_s']:.3g} s "
        f"(method: {e['method']}); attribution sum error {e['attribution_sum_rel_err']:.2%}"
    )
    console.print(
        f"load attribution: {e['attribution_method']} (idle gaps spread, sums to gross); "
        f"busy (≥1 request in flight): {_fmt(e.get('busy_j'))} J"
    )
    if e.get("server_reported"):
        sr = e["server_reported"]
        console.print(
            f"server-reported: {sr['sum_j']:.4g} J over {sr['n']} responses, mean "
            f"{sr['mean_j']:.4g} J (method: {', '.join(sr['methods'])}); "
            f"{_pct(sr.get('over_busy'))} of busy, {_pct(sr.get('over_gross'))} of gross "
            "(the server charges its busy steps only)"
        )
    for a in e.get("audits", []):
        if not a["passed"]:
            console.print(f"[bold red]audit failed[/] {a['name']}: {a['detail']}")
    if j.get("estimated"):
        console.print(
            "[bold yellow]ESTIMATED:[/] no energy sensor was read; these figures come "
            "from a model of CPU time and RAM, not from a measurement."
        )


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _store(path: Path, result: LoadResult, j: dict[str, Any], name: str | None) -> str:
    """Store one load as a ``load`` run: ``done`` if a request succeeded, else ``failed``; audit
    verdicts never change the status (:func:`joulebench.reproduce.serving.store_load`)."""
    from joulebench.reproduce.serving import store_load
    from joulebench.results.store import ResultStore

    with ResultStore(path) as db:
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


def _store_interrupted(path: Path, config: dict[str, Any], name: str | None) -> str:
    """Record a load stopped by Ctrl-C as an ``interrupted`` run (config only, no numbers)."""
    from joulebench.environment import collect_environment
    from joulebench.results.store import ResultStore

    with ResultStore(path) as db:
        run_id = db.start_run("load", config=config, environment=collect_environment(), name=name)
        db.finish_run(run_id, status="interrupted", summary={"run_id": run_id, "config": config})
    return run_id


def _compare(
    base: str,
    policy: str,
    arrival: str,
    items: list[Any],
    lengths: int | list[int],
    *,
    meter: Any,
    as_json: bool,
    idle_s: float,
    model: str | None,
    tokenizer: Tokenizer | None,
    hz: float,
    config: dict[str, Any],
    **load_kwargs: Any,
) -> Any:
    """``--via-shape``: run and print the comparison (``joulebench.shape.experiment``)."""
    from joulebench.cli.shape import run_comparison

    return run_comparison(
        base,
        policy,
        arrival,
        items,
        meter=meter,
        idle_s=idle_s,
        as_json=as_json,
        output_length=lengths,
        load_options={"model": model, "tokenizer": tokenizer, "timeline_hz": hz},
        config=config,
        **load_kwargs,
    )


def _store_comparison(
    path: Path, comparison: Any, config: dict[str, Any], name: str | None
) -> list[str]:
    """Both runs of a ``--via-shape`` comparison as ``load`` runs, per-request rows and timeline
    included; the shaped one carries ``via_shape`` (the report's Pareto figure pairs them)."""
    from joulebench.reproduce.serving import store_load
    from joulebench.results.store import ResultStore

    ids = []
    with ResultStore(path) as db:
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


@handle_errors
def load(
    url: Annotated[
        str | None, typer.Option("--url", help="Base URL of the server under test.")
    ] = None,
    embedded: Annotated[
        bool,
        typer.Option("--embedded", help="Start joulebench's own server (default without --url)."),
    ] = False,
    protocol: Annotated[
        str, typer.Option("--protocol", help=f"{', '.join(PROTOCOLS)}.")
    ] = "openai-chat",
    arrival: Annotated[
        str,
        typer.Option(
            "--arrival",
            help="sequential, burst, fixed:500ms, uniform:50ms,300ms, poisson:RATE, gamma:RATE,CV, trace:FILE.",
        ),
    ] = "burst",
    n: Annotated[int, typer.Option("--n", min=1, help="Number of requests.")] = 32,
    prompts: PromptsOpt = "quick",
    output_length: OutputLengthOpt = "64",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Cap on requests in flight.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the arrival process.")] = 0,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Per-request timeout.")] = 120.0,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model name sent to the server (and its tokenizer for counts)."
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Embedded server only: continuous, dynamic or sequential [default: continuous].",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="Embedded server only: fp32, bf16, … [default: fp32]."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="Embedded server only: cpu, cuda, cuda:N [default: cpu]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    store: Annotated[
        Path | None, typer.Option("--store", help="DuckDB results file to add the run to.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name in the store.")] = None,
    meter: MeterOpt = "auto",
    idle_s: IdleOpt = 0.0,
    hz: HzOpt = 10.0,
    require_isolated_gpu: IsolatedOpt = False,
    cpu_tdp_w: CpuTdpOpt = None,
    cpu_idle_w: CpuIdleOpt = None,
    ram_w_per_gb: RamOpt = None,
    estimate_scope: Annotated[
        str,
        typer.Option(
            "--estimate-scope",
            help="Estimator: process, system, or auto (process when embedded, system for --url).",
        ),
    ] = "auto",
    prometheus_url: PrometheusOpt = None,
    codecarbon_country: CountryOpt = "FRA",
    replay_path: ReplayOpt = None,
    fake_power_w: FakePowerOpt = 100.0,
    nvml_mode: NvmlModeOpt = "auto",
    via_shape: Annotated[
        str | None,
        typer.Option(
            "--via-shape",
            help="Also run the trace through the shaping gateway "
            "with this policy (cadence:500ms, window:8,200ms, slo:500ms) and compare.",
        ),
    ] = None,
) -> None:
    """Send N requests on an arrival schedule; report latency and four energy accountings."""
    if protocol not in PROTOCOLS:
        from joulebench.errors import UnknownName

        raise UnknownName("protocol", protocol, list(PROTOCOLS))
    process = parse_arrival(arrival, seed=seed)  # bad specs fail before anything starts
    server_opts = {"scheduler": scheduler, "precision": precision, "device": device}
    given = [f"--{k}" for k, v in server_opts.items() if v is not None]
    if url and not embedded and given:
        raise ConfigError(f"{', '.join(given)} configure the embedded server: not with --url")
    server = {**EMBEDDED_SERVER, **{k: v for k, v in server_opts.items() if v is not None}}
    if via_shape:
        from joulebench.shape.policies import parse_policy

        parse_policy(via_shape)  # a typo fails before the server starts
    tok = _load_tokenizer(model) if url else None  # embedded: the set's default (tiny) tokenizer
    items, refs = read_prompts(prompts, n=n, seed=seed, tokenizer=tok)
    lengths = output_lengths(output_length, refs)
    if store is not None:
        from joulebench.results.store import check_writable

        check_writable(store)  # fail before the load, not after
    scope = estimate_scope if estimate_scope != "auto" else ("system" if url else "process")
    options: dict[str, Any] = {
        "cpu_tdp_w": cpu_tdp_w,
        "cpu_idle_w": cpu_idle_w,
        "ram_w_per_gb": ram_w_per_gb,
        "estimate_scope": scope,
        # system scope: the server behind the URL is measured, every other process subtracted
        "estimate_target_ports": [_url_port(url)] if url and scope == "system" else [],
        "prometheus_url": prometheus_url,
        "codecarbon_country": codecarbon_country,
        "replay_path": replay_path,
        "fake_power_w": fake_power_w,
        "nvml_mode": nvml_mode,
    }
    cli_config = {
        "target": "url" if url else "embedded",
        "prompts": prompts,
        "output_length_policy": describe_output_length(output_length),
        # the report groups load runs by scheduler; an external server's is unknown to us
        **(
            {"scheduler": "external server"} if url else {**server, "server_model": model or "tiny"}
        ),
    }
    m = open_cli_meter(meter, require_isolated_gpu=require_isolated_gpu, **options)
    comparison = None
    try:
        with _target(url, embedded, model, m, server) as base:
            if via_shape:  # direct vs shaped, same trace/server/meter (joulebench.shape.experiment)
                comparison = _compare(base, via_shape, arrival, items, lengths, meter=m,
                                      as_json=as_json, idle_s=idle_s, n=n, protocol=protocol,
                                      concurrency=concurrency, timeout_s=timeout_s, seed=seed,
                                      model=model if url else None, tokenizer=_counter(tok),
                                      hz=hz, config={"prompts": prompts,
                                      "output_length": describe_output_length(output_length)})  # fmt: skip
            else:
                idle_w = measure_idle(m, idle_s).total_power_w if idle_s > 0 else None
                try:
                    result = run_load(
                        base,
                        protocol,
                        process,
                        items,
                        n=n,
                        output_length=lengths,
                        concurrency=concurrency,
                        timeout_s=timeout_s,
                        meter=m,
                        idle_power_w=idle_w,
                        seed=seed,
                        model=model if url else None,
                        tokenizer=_counter(tok),
                        timeline_hz=hz,
                    )
                except KeyboardInterrupt:
                    if store is not None:
                        cfg = {**cli_config, "url": base, "protocol": protocol, "n": n}
                        cfg["arrival"] = process.describe()
                        run_id = _store_interrupted(store, cfg, name)
                        err_console.print(f"interrupted: recorded as run {run_id} in {store}")
                    raise
    finally:
        m.close()
    if comparison is not None:
        runs = (comparison.direct, comparison.shaped)
        if store is not None:
            ids = _store_comparison(store, comparison, cli_config, name)
            err_console.print(f"stored as runs {', '.join(ids)} (direct, shaped) in {store}")
        if not all(run.load["requests"]["ok"] for run in runs):
            raise typer.Exit(1)
        return
    j = result.to_json()
    j["config"].update(cli_config)
    if store is not None:
        j["run_id"] = _store(store, result, j, name)
    if as_json:
        print_json(j)
    else:
        print_table(j)
        if store is not None:
            err_console.print(f"stored as run {j['run_id']} in {store}")
    if j["requests"]["ok"] == 0:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("load")(load)
