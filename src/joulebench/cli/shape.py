"""``joulebench shape`` (the gateway), ``shape-compare`` (direct vs shaped) and ``shape-sweep``.

``joulebench load … --via-shape POLICY`` runs the same experiment as ``shape-compare``
(``joulebench.shape.experiment.compare``) and prints it with ``cli.shape_views``.

With ``--launch``/``--engine`` the upstream is an engine joulebench starts (and stops once every
run is done); each run's load JSON carries the ``engine`` section (metrics scraped during that
run, server-reported energy and its audit) and the output's top-level ``engine`` the process
(command, pid, ready_s, version, exit_code, stopped_by, log_file).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from joulebench.cli.common import console, err_console, handle_errors, print_json
from joulebench.cli.engine_options import NO_LAUNCH, engine_flags, launch_target, print_engine
from joulebench.cli.meter_options import AUTO_METER, IdleOpt, MeterChoice, meter_flags
from joulebench.cli.shape_views import fmt_value, show_comparison
from joulebench.cli.workload_options import (
    OutputLengthOpt,
    PromptsOpt,
    describe_output_length,
    output_lengths,
    read_prompts,
)
from joulebench.errors import ConfigError, at_least
from joulebench.load.engines.session import LaunchOptions
from joulebench.shape.shaper import DEFAULT_MAX_QUEUE

#: The flags shape-compare and shape-sweep share (and ``--max-delay-ms`` the gateway's too).
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Server URL (default: the embedded server inside this process, sharing its "
        "interpreter lock with the gateway; at tens of req/s use --engine joulebench).",
    ),
]
ArrivalOpt = Annotated[str, typer.Option("--arrival", help="Arrival process (as joulebench load).")]
NOpt = Annotated[int, typer.Option("--n", help="Requests per run.")]
MaxDelayOpt = Annotated[
    float | None, typer.Option("--max-delay-ms", help="Most delay any request may get.")
]
SeedOpt = Annotated[int, typer.Option("--seed")]
TimeoutOpt = Annotated[float, typer.Option("--timeout-s")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

DEFAULT_SWEEP = (
    "cadence:100ms",
    "cadence:250ms",
    "cadence:500ms",
    "window:4,200ms",
    "window:8,400ms",
    "slo:500ms",
)


@handle_errors
def shape(
    upstream: str = typer.Option(..., "--upstream", help="Base URL of the server to front."),
    policy: str = typer.Option(
        "passthrough",
        "--policy",
        help="passthrough, cadence:500ms, window:N,T (window:8,200ms) or slo:BUDGET "
        "(slo:500ms: adaptive, least energy per request within that added delay).",
    ),
    max_delay_ms: MaxDelayOpt = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8081, "--port", help="Port (0 picks a free one)."),
    max_queue: int = typer.Option(
        DEFAULT_MAX_QUEUE, "--max-queue", help="Held requests before 429."
    ),
    upstream_timeout_s: float = typer.Option(600.0, "--upstream-timeout-s", help="Per request."),
) -> None:
    """Run the arrival-shaping gateway in front of an OpenAI/TGI server."""
    from joulebench.shape.gateway import Gateway
    from joulebench.shape.policies import parse_policy
    from joulebench.shape.runner import serve_forever

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0…65535, got {port}")
    at_least(max_queue, 1, "--max-queue")
    if upstream_timeout_s <= 0:
        raise ConfigError(f"--upstream-timeout-s must be positive, got {upstream_timeout_s}")
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be an http(s) URL, got {upstream!r}")
    pol = parse_policy(policy, max_delay_ms=max_delay_ms)
    gw = Gateway(upstream, pol, max_queue=max_queue, upstream_timeout_s=upstream_timeout_s)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding {host}: reachable from other machines")
    err_console.print(f"joulebench shape: http://{host}:{port} → {upstream} ({pol.describe()})")
    serve_forever(gw, host, port)


@handle_errors
@meter_flags(estimate_scope="auto")
@engine_flags
def shape_compare(
    policy: str = typer.Option(..., "--policy", help="Policy to compare with direct sending."),
    url: UrlOpt = None,
    arrival: ArrivalOpt = "poisson:2",
    n: NOpt = 40,
    protocol: str = typer.Option(
        "openai-chat", "--protocol", help="openai-chat, openai-completions, tgi."
    ),
    prompts: PromptsOpt = "quick",
    output_length: OutputLengthOpt = "16",
    max_delay_ms: MaxDelayOpt = None,
    seed: SeedOpt = 0,
    timeout_s: TimeoutOpt = 120.0,
    model: str = typer.Option("tiny", "--model", help="Embedded server model."),
    scheduler: str = typer.Option("continuous", "--scheduler", help="Embedded server scheduler."),
    meter: MeterChoice = AUTO_METER,
    idle_s: IdleOpt = 2.0,
    as_json: JsonOpt = False,
    launching: LaunchOptions = NO_LAUNCH,
) -> None:
    """Same seeded trace directly and through the gateway: energy and latency side by side.

    --prompts and --output-length mean what they mean for joulebench load. With --launch or
    --engine the engine is started first and stopped after both runs; --json then has an
    `engine` section, and each run's load its own (metrics, server-reported energy).
    """
    from joulebench.shape.experiment import Trial, compare, stamp_engine
    from joulebench.shape.policies import parse_policy

    parse_policy(policy, max_delay_ms=max_delay_ms)  # a typo fails before anything starts
    items, lengths = _workload(prompts, output_length, n=n, seed=seed)
    with (
        launch_target(url, launching, model=model, meter=meter) as (target, session),
        contextlib.closing(meter.for_url(target).open()) as m,
    ):
        trial = Trial(
            target, arrival, items, n, meter=m, idle_s=idle_s, protocol=protocol,
            output_length=lengths, max_delay_ms=max_delay_ms, seed=seed, timeout_s=timeout_s,
            embedded={"model": model, "scheduler": scheduler} if target is None else None,
            engine=session,
        )  # fmt: skip
        result = compare(trial, policy)
    stamp_engine(result, session)  # stopped now: its exit status is known
    result.config.update(_workload_config(prompts, output_length))
    show_comparison(result, as_json)
    if not as_json:
        print_engine(result.to_json())
    if not all(run.load["requests"]["ok"] for run in result.runs):
        raise typer.Exit(1)


def _workload(
    prompts: str, output_length: str, *, n: int, seed: int
) -> tuple[list[Any], int | list[int]]:
    """Prompts and max_tokens exactly as ``joulebench load`` reads them."""
    items, refs = read_prompts(prompts, n=n, seed=seed)
    return items, output_lengths(output_length, refs)


def _workload_config(prompts: str, output_length: str) -> dict[str, Any]:
    return {"prompts": prompts, "output_length": describe_output_length(output_length)}


@handle_errors
@meter_flags(estimate_scope="auto")
@engine_flags
def shape_sweep(
    policies: list[str] = typer.Option(
        list(DEFAULT_SWEEP), "--policy", help="Repeat for each policy to sweep."
    ),
    url: UrlOpt = None,
    arrival: ArrivalOpt = "poisson:2",
    n: NOpt = 40,
    protocol: str = typer.Option("openai-chat", "--protocol"),
    prompts: PromptsOpt = "quick",
    output_length: OutputLengthOpt = "16",
    max_delay_ms: float = typer.Option(None, "--max-delay-ms"),
    seed: SeedOpt = 0,
    timeout_s: TimeoutOpt = 120.0,
    accounting: str = typer.Option(
        "idle_subtracted", "--accounting", help="Energy accounting to rank by."
    ),
    latency: str = typer.Option("ttft_ms:p99", "--latency", help="ttft_ms:p99, e2e_ms:p99…"),
    model: str = typer.Option("tiny", "--model"),
    scheduler: str = typer.Option("continuous", "--scheduler"),
    meter: MeterChoice = AUTO_METER,
    idle_s: IdleOpt = 2.0,
    out: Path = typer.Option(None, "--out", help="Directory for sweep.json and pareto.png."),
    as_json: JsonOpt = False,
    launching: LaunchOptions = NO_LAUNCH,
) -> None:
    """Energy-vs-latency Pareto table over shaping policies (direct sending included).

    With --launch or --engine the engine is started first and stopped after the last policy;
    --json and sweep.json then have an `engine` section, and each run's load its own.
    """
    from joulebench.shape.experiment import Trial, stamp_engine
    from joulebench.shape.sweep import sweep

    items, lengths = _workload(prompts, output_length, n=n, seed=seed)
    with (
        launch_target(url, launching, model=model, meter=meter) as (target, session),
        contextlib.closing(meter.for_url(target).open()) as m,
    ):
        trial = Trial(
            target, arrival, items, n, protocol=protocol,
            output_length=lengths, max_delay_ms=max_delay_ms, seed=seed, meter=m,
            idle_s=idle_s, timeout_s=timeout_s,
            embedded={"model": model, "scheduler": scheduler} if target is None else None,
            engine=session,
        )  # fmt: skip
        result = sweep(trial, policies, accounting=accounting, latency=latency)
    stamp_engine(result, session)  # stopped now: its exit status is known
    result.config.update(_workload_config(prompts, output_length))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
        result.figure(out / "pareto.png")
        err_console.print(f"wrote {out / 'sweep.json'} and {out / 'pareto.png'}")
    if as_json:
        print_json(result.to_json())
        return
    table = Table(
        "policy", f"J/request ({accounting})", latency, "added delay p99 ms", "mean batch", "failed", "Pareto",
        title=f"energy method: {result.method or 'no meter'}",
    )  # fmt: skip
    for p in result.points():
        table.add_row(
            p.label, fmt_value(p.energy_j), fmt_value(p.latency_ms), fmt_value(p.added_delay_p99_ms),
            fmt_value(p.mean_batch_size), str(p.failed), "★" if p.on_front else "",
        )  # fmt: skip
    console.print(table)
    print_engine(result.to_json())


def register(app: typer.Typer) -> None:
    app.command("shape")(shape)
    app.command("shape-compare")(shape_compare)
    app.command("shape-sweep")(shape_sweep)
