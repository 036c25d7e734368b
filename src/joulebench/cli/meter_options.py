"""Typer options every measuring command shares, and the function that opens the meter from them.

Use the ``Annotated`` aliases as parameter types, then call :func:`open_cli_meter`::

    def profile(meter: MeterOpt = "auto", cpu_tdp_w: CpuTdpOpt = None, ...):
        m = open_cli_meter(meter, cpu_tdp_w=cpu_tdp_w, ...)

``--gpus`` and ``--allow-missing-gpu`` reach every command that takes ``--meter`` without each
command declaring them: :func:`add_gpu_options` (called once by the app) adds them to those
commands, and :func:`open_cli_meter` applies them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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

GpusOpt = Annotated[
    str | None,
    _option(
        "--gpus",
        help="GPUs to measure: NVML indices as nvidia-smi shows them, or UUIDs (0,1 or GPU-…). "
        "Default: the model's devices (profile, serve), else CUDA_VISIBLE_DEVICES.",
    ),
]
AllowMissingGpuOpt = Annotated[
    bool,
    _option(
        "--allow-missing-gpu",
        help="A run on cuda whose meter measures no GPU is labelled estimated instead of failing.",
    ),
]

_GPU_FLAGS: ContextVar[dict[str, Any] | None] = ContextVar("joulebench_gpu_flags", default=None)


@contextmanager
def gpu_flags(gpus: str | None, allow_missing_gpu: bool) -> Iterator[None]:
    """Make ``--gpus``/``--allow-missing-gpu`` the defaults of :func:`open_cli_meter` inside."""
    token = _GPU_FLAGS.set({"gpus": gpus, "allow_missing_gpu": allow_missing_gpu})
    try:
        yield
    finally:
        _GPU_FLAGS.reset(token)


def current_gpus() -> str | None:
    """The running command's ``--gpus`` (``None`` when not given)."""
    return (_GPU_FLAGS.get() or {}).get("gpus")


def with_gpu_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with ``--gpus`` and ``--allow-missing-gpu`` added to its options."""
    signature = inspect.signature(command, eval_str=True)
    if "gpus" in signature.parameters:
        return command
    extra = [
        inspect.Parameter("gpus", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=GpusOpt),
        inspect.Parameter(
            "allow_missing_gpu",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=AllowMissingGpuOpt,
        ),
    ]
    params = list(signature.parameters.values())
    kinds = [p.kind for p in params]
    if inspect.Parameter.VAR_KEYWORD in kinds:  # keyword-only parameters go before **kwargs
        at = kinds.index(inspect.Parameter.VAR_KEYWORD)
        params[at:at] = extra
    else:
        params.extend(extra)

    @functools.wraps(command)
    def wrapper(*args: Any, gpus: str | None = None, allow_missing_gpu: bool = False, **kw: Any):
        with gpu_flags(gpus, allow_missing_gpu):
            return command(*args, **kw)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


def add_gpu_options(app: typer.Typer) -> None:
    """Give every registered command that takes ``--meter`` the ``--gpus`` and
    ``--allow-missing-gpu`` options (call once, after the commands are registered)."""
    for info in app.registered_commands:
        callback = info.callback
        if callback is not None and "meter" in inspect.signature(callback).parameters:
            info.callback = with_gpu_options(callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_gpu_options(group.typer_instance)


def open_cli_meter(
    meter: str = "auto",
    *,
    require_isolated_gpu: bool = False,
    allowed_pids: tuple[int, ...] = (),
    **options: Any,
) -> Meter:
    """Open the meter the flags describe and run the GPU isolation check on it.

    ``gpus`` and ``allow_missing_gpu`` default to the command's ``--gpus`` and
    ``--allow-missing-gpu`` (see :func:`add_gpu_options`).
    """
    for key, value in (_GPU_FLAGS.get() or {}).items():
        if options.get(key) is None:
            options[key] = value
    m = open_meter(meter, **options)
    try:
        check_gpu_isolation(m, require_isolated=require_isolated_gpu, allowed_pids=allowed_pids)
    except BaseException:
        m.close()
        raise
    return m
