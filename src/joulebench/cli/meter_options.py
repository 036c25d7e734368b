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


def _option(*flags: str, **kwargs: Any) -> Any:
    """A ``typer.Option`` shown in the help's "Meter" panel."""
    return typer.Option(*flags, rich_help_panel=_PANEL, **kwargs)


MeterOpt = Annotated[
    str,
    _option(
        "--meter", help=f"auto, one of {', '.join(KNOWN_METERS)}, or a '+' combination (nvml+rapl)."
    ),
]
IdleOpt = Annotated[
    float, _option("--idle-s", min=0.0, help="Measure idle power this long first (0: no baseline).")
]
HzOpt = Annotated[float, _option("--hz", min=1.0, help="Power-timeline sampling rate (Hz).")]
CpuTdpOpt = Annotated[
    float | None, _option("--cpu-tdp-w", min=0.0, help="Estimator: CPU package TDP in W.")
]
CpuIdleOpt = Annotated[
    float | None, _option("--cpu-idle-w", min=0.0, help="Estimator: idle package power in W.")
]
RamOpt = Annotated[
    float | None, _option("--ram-w-per-gb", min=0.0, help="Estimator: RAM power per GB.")
]
ScopeOpt = Annotated[
    str, _option("--estimate-scope", help="Estimator: 'process' (this process tree) or 'system'.")
]
PrometheusOpt = Annotated[
    str | None, _option("--prometheus-url", help="Prometheus with DCGM exporter metrics.")
]
CountryOpt = Annotated[
    str, _option("--codecarbon-country", help="CodeCarbon meter: ISO alpha-3 country.")
]
ReplayOpt = Annotated[
    Path | None, _option("--replay-path", help="Replay meter: CSV t_s,domain,energy_j.")
]
FakePowerOpt = Annotated[
    float, _option("--fake-power-w", min=0.0, help="Fake meter: constant power in W.")
]
NvmlModeOpt = Annotated[str, _option("--nvml-mode", help="NVML: auto, counter or polled.")]
IsolatedOpt = Annotated[
    bool,
    _option(
        "--require-isolated-gpu",
        help="Fail instead of warning when another process uses a measured GPU.",
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
