"""The flags of ``joulebench load`` that are its own (the meter, engine, workload and contention
groups live in their option modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from joulebench.load.clients import PROTOCOLS

UrlOpt = Annotated[str | None, typer.Option("--url", help="Base URL of the server under test.")]
EmbeddedOpt = Annotated[
    bool,
    typer.Option("--embedded", help="Start joulebench's own server (default without --url)."),
]
ProtocolOpt = Annotated[str, typer.Option("--protocol", help=f"{', '.join(PROTOCOLS)}.")]
ArrivalOpt = Annotated[
    str,
    typer.Option(
        "--arrival",
        help="sequential, burst, fixed:500ms, uniform:50ms,300ms, poisson:RATE, gamma:RATE,CV, trace:FILE.",
    ),
]
NOpt = Annotated[int, typer.Option("--n", min=1, help="Number of requests.")]
ConcurrencyOpt = Annotated[
    int | None, typer.Option("--concurrency", min=1, help="Cap on requests in flight.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the arrival process.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout-s", help="Per-request timeout.")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Model name sent to the server (and its tokenizer for counts)."),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Embedded server only: continuous, dynamic or sequential [default: continuous].",
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="Embedded server only: fp32, bf16, … [default: fp32]."),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="Embedded server only: cpu, cuda, cuda:N [default: cpu]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="DuckDB results file to add the run to.")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run name in the store.")]
MaxFailedRateOpt = Annotated[
    float,
    typer.Option(
        "--max-failed-rate",
        min=0.0,
        max=1.0,
        help="Share of requests that may fail or be truncated before the exit status is 1 "
        "[default: 0: any lost request fails the run].",
    ),
]
ViaShapeOpt = Annotated[
    str | None,
    typer.Option(
        "--via-shape",
        help="Also run the trace through the shaping gateway "
        "with this policy (cadence:500ms, window:8,200ms, slo:500ms) and compare.",
    ),
]
