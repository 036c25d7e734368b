"""``joulebench serve``: the embedded energy-reporting inference server (OpenAI + TGI protocols)."""

from __future__ import annotations

import typer
from rich.markup import escape

from joulebench.cli.common import err_console, handle_errors
from joulebench.cli.meter_options import AUTO_METER, MeterChoice, meter_flags


@handle_errors
@meter_flags
def serve(
    model: str = typer.Option(
        "tiny", "--model", help="Model source: 'tiny', a local path or hub id."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, fp16, int8, int4…"),
    scheduler: str = typer.Option(
        "continuous", "--scheduler", help="continuous, dynamic or sequential."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="Port (0 picks a free one)."),
    max_queue: int = typer.Option(256, "--max-queue", help="Waiting requests before 429."),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="Rows per forward step."),
    default_max_tokens: int = typer.Option(
        64, "--default-max-tokens", help="When a request sets none."
    ),
    api_key: str = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY'."),
    max_body_mib: float = typer.Option(
        8.0, "--max-body-mib", help="Largest request body in MiB; larger ones get 413."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
    idle_s: float = typer.Option(
        2.0, "--idle-s", help="Idle baseline before serving (0: no net energy)."
    ),
    window_ms: float = typer.Option(
        None, "--window-ms", help="dynamic: how long to collect requests before a batch (20)."
    ),
    bucketing: str = typer.Option(
        None,
        "--bucketing",
        help="dynamic: how collected requests are cut into batches: 'cost' (default: the cut "
        "with the least predicted time, from the server's own timed steps) or 'ratio'.",
    ),
    bucket_ratio: float = typer.Option(
        None,
        "--bucket-ratio",
        help="dynamic: the 'ratio' rule (and 'cost' until calibrated): longest prompt ≤ ratio × "
        "shortest + 8 tokens in one batch (1.5).",
    ),
    meter: MeterChoice = AUTO_METER,
) -> None:
    """Serve a model with per-response energy (usage.energy and x-energy-j headers)."""
    from joulebench.serve.launch import (
        ServerSettings,
        check_server_limits,
        dynamic_options,
        require_server_extra,
        serve_forever,
    )

    check_server_limits(
        port=port, max_queue=max_queue, max_batch_size=max_batch_size, max_body_mib=max_body_mib
    )
    scheduler_options = dynamic_options(
        scheduler, window_ms=window_ms, bucketing=bucketing, bucket_ratio=bucket_ratio
    )
    require_server_extra()  # fail before a model is loaded
    m = meter.open()
    _announce(model, precision, scheduler, host, port)
    serve_forever(
        ServerSettings(
            model,
            precision,
            scheduler,
            meter=m,
            host=host,
            port=port,
            api_key=api_key,
            max_body_mib=max_body_mib,
            engine_options={
                "device": device,
                "max_queue": max_queue,
                "max_batch_size": max_batch_size,
                "default_max_tokens": default_max_tokens,
                "idle_s": idle_s,
                **scheduler_options,
            },
        )
    )


def _announce(model: str, precision: str, scheduler: str, host: str, port: int) -> None:
    """What is served where, on stderr; a warning first when other machines can reach it."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[yellow]warning:[/] binding {escape(host)}: reachable from other machines"
        )
    err_console.print(
        f"joulebench serve: {escape(model)} ({escape(precision)}, {escape(scheduler)}) "
        f"on http://{escape(host)}:{port}"
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
