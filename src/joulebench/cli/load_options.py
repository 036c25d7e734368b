"""The flags of ``joulebench load`` that are its own (the meter, engine, workload and contention
groups live in their option modules), and its two groups: the embedded server's settings
(:class:`EmbeddedServerFlags`, ``@embedded_server_flags``) and what becomes of a finished load
(:class:`ReportFlags`, ``@report_flags``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from joulebench.cli.common import flag_group
from joulebench.errors import ConfigError
from joulebench.load.clients import PROTOCOLS

#: How ``load`` without ``--url`` starts joulebench's server (recorded in the run's config).
EMBEDDED_SERVER: dict[str, Any] = {"precision": "fp32", "scheduler": "continuous"}

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


@dataclass(frozen=True, slots=True)
class EmbeddedServerFlags:
    """``--scheduler``, ``--precision`` and ``--device`` as given (``None``: not given), named
    as the embedded server's settings; :func:`embedded_server_flags` hands a command these."""

    scheduler: SchedulerOpt = None
    precision: PrecisionOpt = None
    device: DeviceOpt = None

    def settings(self, url: str | None, embedded: bool) -> dict[str, Any]:
        """The embedded server's settings: :data:`EMBEDDED_SERVER` with the given ones; given
        with ``--url`` (and no ``--embedded``), they are an error naming them."""
        given = {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}
        if url and not embedded and given:
            flags = ", ".join(f"--{k}" for k in given)
            raise ConfigError(f"{flags} configure the embedded server: not with --url")
        return {**EMBEDDED_SERVER, **given}


@dataclass(frozen=True, slots=True)
class ReportFlags:
    """What becomes of a finished load: printed (``--json`` or a table), stored (``--store``,
    ``--name``) and judged (``--max-failed-rate``: the exit status)."""

    as_json: JsonOpt = False
    store: StoreOpt = None
    name: NameOpt = None
    max_failed_rate: MaxFailedRateOpt = 0.0


#: The defaults of a command's ``server`` and ``report`` parameters (the decorators replace them).
NO_SERVER_FLAGS = EmbeddedServerFlags()
DEFAULT_REPORT = ReportFlags()

#: Give a command the embedded server's flags in place of its ``server: EmbeddedServerFlags``.
embedded_server_flags = flag_group(EmbeddedServerFlags, "server")
#: Give a command the report flags in place of its ``report: ReportFlags`` parameter.
report_flags = flag_group(ReportFlags, "report")
