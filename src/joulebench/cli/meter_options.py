"""Typer options every measuring command shares, and the function that opens the meter from them.

Use the ``Annotated`` aliases as parameter types, then call :func:`open_cli_meter`::

    def profile(meter: MeterOpt = "auto", cpu_tdp_w: CpuTdpOpt = None, ...):
        m = open_cli_meter(meter, cpu_tdp_w=cpu_tdp_w, ...)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from joulebench.meters.base import Meter
from joulebench.meters.isolation import check_gpu_isolation
from joulebench.meters.registry import KNOWN_METERS, open_meter

log = logging.getLogger(__name__)

_PANEL = "Meter"

MeterOpt = Annotated[
    str,
    typer.Option(
        "--meter",
        help=f"auto, one of {', '.join(KNOWN_METERS)}, or a '+' combination (nvml+rapl).",
        rich_help_panel=_PANEL,
    ),
]
IdleOpt = Annotated[
    float,
    typer.Option(
        "--idle-s",
        min=0.0,
        help="Measure idle power this long first (0: no baseline).",
        rich_help_panel=_PANEL,
    ),
]
HzOpt = Annotated[
    float,
    typer.Option(
        "--hz", min=1.0, help="Power-timeline sampling rate (Hz).", rich_help_panel=_PANEL
    ),
]
CpuTdpOpt = Annotated[
    float | None,
    typer.Option(
        "--cpu-tdp-w", min=0.0, help="Estimator: CPU package TDP in W.", rich_help_panel=_PANEL
    ),
]
CpuIdleOpt = Annotated[
    float | None,
    typer.Option(
        "--cpu-idle-w", min=0.0, help="Estimator: idle package power in W.", rich_help_panel=_PANEL
    ),
]
RamOpt = Annotated[
    float | None,
    typer.Option(
        "--ram-w-per-gb", min=0.0, help="Estimator: RAM power per GB.", rich_help_panel=_PANEL
    ),
]
ScopeOpt = Annotated[
    str,
    typer.Option(
        "--estimate-scope",
        help="Estimator: 'process' (this process tree) or 'system'.",
        rich_help_panel=_PANEL,
    ),
]
PrometheusOpt = Annotated[
    str | None,
    typer.Option(
        "--prometheus-url", help="Prometheus with DCGM exporter metrics.", rich_help_panel=_PANEL
    ),
]
CountryOpt = Annotated[
    str,
    typer.Option(
        "--codecarbon-country",
        help="CodeCarbon meter: ISO alpha-3 country.",
        rich_help_panel=_PANEL,
    ),
]
ReplayOpt = Annotated[
    Path | None,
    typer.Option(
        "--replay-path", help="Replay meter: CSV t_s,domain,energy_j.", rich_help_panel=_PANEL
    ),
]
FakePowerOpt = Annotated[
    float,
    typer.Option(
        "--fake-power-w", min=0.0, help="Fake meter: constant power in W.", rich_help_panel=_PANEL
    ),
]
NvmlModeOpt = Annotated[
    str,
    typer.Option("--nvml-mode", help="NVML: auto, counter or polled.", rich_help_panel=_PANEL),
]
IsolatedOpt = Annotated[
    bool,
    typer.Option(
        "--require-isolated-gpu",
        help="Fail instead of warning when another process uses a measured GPU.",
        rich_help_panel=_PANEL,
    ),
]


def open_cli_meter(
    meter: str = "auto",
    *,
    require_isolated_gpu: bool = False,
    allowed_pids: tuple[int, ...] = (),
    **options: Any,
) -> Meter:
    """Open the meter the flags describe and run the GPU isolation check on it."""
    m = open_meter(meter, **options)
    try:
        check_gpu_isolation(m, require_isolated=require_isolated_gpu, allowed_pids=allowed_pids)
    except BaseException:
        m.close()
        raise
    return m
