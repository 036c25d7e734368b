"""``joulebench serve``: the embedded energy-reporting inference server (OpenAI + TGI protocols)."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from joulebench.cli.common import err_console, handle_errors
from joulebench.cli.meter_options import AUTO_METER, MeterChoice, meter_flags
from joulebench.errors import ConfigError
from joulebench.extras import require


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
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0…65535, got {port}")
    if max_queue < 1 or max_batch_size < 1:
        raise ConfigError("--max-queue and --max-batch-size must be ≥ 1")
    if not max_body_mib > 0:
        raise ConfigError(f"--max-body-mib must be > 0, got {max_body_mib}")
    scheduler_options: dict[str, Any] = {}
    if window_ms is not None:
        if window_ms < 0:
            raise ConfigError(f"--window-ms must be ≥ 0, got {window_ms}")
        scheduler_options["window_s"] = window_ms / 1e3
    if bucket_ratio is not None:
        if bucket_ratio < 1:
            raise ConfigError(f"--bucket-ratio must be ≥ 1, got {bucket_ratio}")
        scheduler_options["bucket_ratio"] = bucket_ratio
    if bucketing is not None:
        from joulebench.serve.schedulers.dynamic import BUCKETINGS

        if bucketing not in BUCKETINGS:
            raise ConfigError(
                f"--bucketing must be one of {', '.join(BUCKETINGS)}, got {bucketing!r}"
            )
        scheduler_options["bucketing"] = bucketing
    if scheduler_options and scheduler != "dynamic":
        raise ConfigError(
            "--window-ms, --bucketing and --bucket-ratio only apply to --scheduler dynamic "
            f"(got --scheduler {scheduler})"
        )
    for module in ("fastapi", "uvicorn", "prometheus_client"):  # fail before a model is loaded
        require(module, "serve", "the embedded server")
    from joulebench.serve.launch import serve_forever

    m = meter.open()
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[yellow]warning:[/] binding {escape(host)}: reachable from other machines"
        )
    err_console.print(
        f"joulebench serve: {escape(model)} ({escape(precision)}, {escape(scheduler)}) "
        f"on http://{escape(host)}:{port}"
    )
    serve_forever(
        model,
        precision,
        scheduler,
        meter=m,
        host=host,
        port=port,
        api_key=api_key,
        max_body_mib=max_body_mib,
        device=device,
        max_queue=max_queue,
        max_batch_size=max_batch_size,
        default_max_tokens=default_max_tokens,
        idle_s=idle_s,
        **scheduler_options,
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
