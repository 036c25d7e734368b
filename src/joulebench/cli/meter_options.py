"""The meter option group every measuring command shares, and the function that opens it.

Decorate a command with :func:`meter_flags` and give it one ``meter: MeterChoice`` parameter;
the decorator adds ``--meter`` and every backend's flags to its options and hands it the
choice, which opens the meter::

    @meter_flags
    def profile(..., meter: MeterChoice, ...):
        m = meter.open()

A flag given for a backend that ``--meter`` does not use is refused, naming its backend.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from joulebench.cli.common import expand_parameter, panel_option
from joulebench.meters.base import Meter
from joulebench.meters.isolation import check_gpu_isolation
from joulebench.meters.registry import KNOWN_METERS, check_backend_options, open_meter

log = logging.getLogger(__name__)

_option = panel_option("Meter")


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


@dataclass(frozen=True, slots=True)
class MeterChoice:
    """What the meter flags say: the spec (``auto``, ``nvml+rapl``…), the backends' options
    that were set, and whether a shared GPU is an error."""

    spec: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    require_isolated_gpu: bool = False

    def with_options(self, **options: Any) -> MeterChoice:
        """The same choice with these options set (computed by the command, not given)."""
        return replace(self, options={**self.options, **options})

    def for_url(self, url: str | None) -> MeterChoice:
        """The choice for a run against the server at ``url`` (``None``: the embedded one).

        The estimator's scope, unless given: the process tree when the server runs inside
        joulebench; the system when it is another process (``--url``, a launched engine), with
        the process listening on the URL's port measured and every other process subtracted,
        so the server's CPU is counted and a neighbour's is not.
        """
        scope = self.options.get("estimate_scope") or ("system" if url else "process")
        return self.with_options(
            estimate_scope=scope,
            estimate_target_ports=[url_port(url)] if url and scope == "system" else [],
        )

    def flags(self) -> dict[str, Any]:
        """Every backend flag's value (``None`` where unset), as a stored run config keeps them."""
        return {name: self.options.get(name) for name, _, _ in _BACKEND_FLAGS}

    def open(self, *, allowed_pids: tuple[int, ...] = ()) -> Meter:
        """Open the meter (see :func:`open_cli_meter`)."""
        return open_cli_meter(
            self.spec,
            require_isolated_gpu=self.require_isolated_gpu,
            allowed_pids=allowed_pids,
            **self.options,
        )


def url_port(url: str) -> int:
    """The TCP port a server URL points at (its scheme's default when none is written)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _scope_auto_opt() -> Any:
    return Annotated[
        str,
        _option(
            "--estimate-scope",
            help="Estimator: process, system, or auto (process when embedded, system for --url "
            "or a launched engine).",
        ),
    ]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# (parameter, annotation, default): the meter group, in the order --help shows it
_BACKEND_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("cpu_tdp_w", CpuTdpOpt, None),
    ("cpu_idle_w", CpuIdleOpt, None),
    ("ram_w_per_gb", RamOpt, None),
    ("estimate_scope", ScopeOpt, "process"),
    ("prometheus_url", PrometheusOpt, None),
    ("codecarbon_country", CountryOpt, "FRA"),
    ("replay_path", ReplayOpt, None),
    ("fake_power_w", FakePowerOpt, 100.0),
    ("nvml_mode", NvmlModeOpt, "auto"),
)


def _given(
    ctx: typer.Context | None, values: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """The backend flags set on the command line (or, called without typer, off default)."""
    given = []
    for name, value in values.items():
        source = ctx.get_parameter_source(name) if ctx is not None else None
        if source is not None:
            if source.name != "DEFAULT":
                given.append(name)
        elif value != defaults[name]:
            given.append(name)
    return given


def meter_flags(
    command: Callable[..., Any] | None = None, *, estimate_scope: str = "process"
) -> Any:
    """Give ``command`` the meter option group in place of its ``meter: MeterChoice`` parameter.

    The flags and their defaults are the same for every command; ``estimate_scope="auto"``
    (``load``) lets the command pick the estimator's scope itself.
    """
    if command is None:
        return functools.partial(meter_flags, estimate_scope=estimate_scope)
    flags = [
        ("meter", MeterOpt, "auto"),
        ("require_isolated_gpu", IsolatedOpt, False),
        *(
            (n, _scope_auto_opt(), "auto") if n == "estimate_scope" and estimate_scope == "auto"
            else (n, a, d)
            for n, a, d in _BACKEND_FLAGS
        ),
    ]  # fmt: skip
    defaults = {n: d for n, _, d in flags}
    signature = expand_parameter(command, "meter", flags, "meter flags")
    params = list(signature.parameters.values())
    # typer fills a typer.Context parameter: it says which flags the command line gave
    params.append(
        inspect.Parameter(
            "meter_flags_ctx",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=typer.Context,
        )
    )

    @functools.wraps(command)
    def wrapper(*args: Any, **kw: Any) -> Any:
        ctx = kw.pop("meter_flags_ctx", None)
        spec = kw.pop("meter", "auto")
        isolated = kw.pop("require_isolated_gpu", False)
        values = {n: kw.pop(n, defaults[n]) for n, _, _ in _BACKEND_FLAGS}
        check_backend_options(spec, _given(ctx, values, defaults), flag=_flag)
        options = {k: v for k, v in values.items() if v is not None}
        if options.get("estimate_scope") == "auto":
            del options["estimate_scope"]
        choice = MeterChoice(spec, options, isolated)
        return command(*args, meter=choice, **kw)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


AUTO_METER = MeterChoice()
"""The default of a ``meter: MeterChoice`` parameter (:func:`meter_flags` replaces it)."""
