"""Typer options for launching the engine under test (``load``, ``shape-compare``, ``shape-sweep``,
``reproduce``).

:func:`engine_flags` gives a command the whole group in place of one
``launching: LaunchOptions`` parameter::

    @engine_flags
    def shape_sweep(..., launching: LaunchOptions = NO_LAUNCH): ...

The flags, their presets and the stop rules are described in :mod:`joulebench.load.engines`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from rich.markup import escape

from joulebench.cli.common import console, err_console, expand_parameter, panel_option
from joulebench.load.engines.presets import PRESETS
from joulebench.load.engines.session import (
    EngineSession,
    LaunchOptions,
    LaunchPlan,
    engine_session,
    plan,
)

#: The ``--help`` heading of the engine flags (``reproduce --url`` joins them).
ENGINE_PANEL = "Engine (launched by joulebench)"
_option = panel_option(ENGINE_PANEL)


LaunchOpt = Annotated[
    str | None,
    _option(
        "--launch",
        help="Start this engine command first (own process group, logs kept), wait until --url "
        "answers, measure idle with the model loaded, run, then stop it (also on Ctrl-C).",
    ),
]
EngineOpt = Annotated[
    str | None,
    _option(
        "--engine",
        help=f"Launch a preset engine serving --model: {', '.join(PRESETS)} "
        "(tensor parallel = the number of --gpus; see docs/engines.md).",
    ),
]
EngineArgsOpt = Annotated[
    str | None, _option("--engine-args", help="Extra words appended to the --engine command.")
]
ReadyPathOpt = Annotated[
    str | None,
    _option(
        "--ready-path",
        help="Path that answers 2xx once the engine serves (default: /health, then /v1/models).",
    ),
]
ReadyTimeoutOpt = Annotated[
    float, _option("--ready-timeout-s", min=0.1, help="How long to wait for the engine to serve.")
]
StopGraceOpt = Annotated[
    float,
    _option("--stop-grace-s", min=0.0, help="SIGTERM, then SIGKILL after this many seconds."),
]
EngineLogOpt = Annotated[
    Path | None,
    _option(
        "--engine-log-dir",
        help="Where the engine's log goes (default: next to --store, else joulebench-results/engine-logs).",
    ),
]


_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("launch", LaunchOpt, None),
    ("engine", EngineOpt, None),
    ("engine_args", EngineArgsOpt, None),
    ("ready_path", ReadyPathOpt, None),
    ("ready_timeout_s", ReadyTimeoutOpt, 600.0),
    ("stop_grace_s", StopGraceOpt, 15.0),
    ("engine_log_dir", EngineLogOpt, None),
)

NO_LAUNCH = LaunchOptions()
"""The default of a ``launching: LaunchOptions`` parameter (:func:`engine_flags` replaces it)."""


def engine_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the engine option group (``--launch``, ``--engine``, ``--engine-args``,
    ``--ready-path``, ``--ready-timeout-s``, ``--stop-grace-s``, ``--engine-log-dir``) in place
    of its ``launching: LaunchOptions`` parameter, which receives them bundled."""
    signature = expand_parameter(command, "launching", _FLAGS, "engine flags")

    @functools.wraps(command)
    def wrapper(*args: Any, **kw: Any) -> Any:
        values = {n: kw.pop(n, d) for n, _, d in _FLAGS}
        values["log_dir"] = values.pop("engine_log_dir")  # the flag says whose log it is
        return command(*args, launching=LaunchOptions(**values), **kw)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper


def plan_launch(
    opts: LaunchOptions,
    *,
    url: str | None,
    model: str | None,
    gpus: str | None,
    store: Path | None,
    meter: str,
    fake_power_w: float,
) -> LaunchPlan | None:
    """The launch the flags ask for (``None``: nothing to launch); the engine's log goes next to
    ``--store`` unless ``--engine-log-dir`` says otherwise."""
    if not opts.wanted:
        return None
    return plan(
        opts, url=url, model=model, gpus=gpus, meter=meter,
        fake_power_w=fake_power_w if meter == "fake" else None,
        log_dir=store.parent / "engine-logs" if store is not None else None,
    )  # fmt: skip


@contextlib.contextmanager
def launched(launch: LaunchPlan | None) -> Iterator[EngineSession | None]:
    """The launched engine's session, stopped on exit (``None`` when nothing is launched)."""
    if launch is None:
        yield None
        return
    err_console.print(f"starting engine ({launch.name}); log: {launch.log_path}")
    with engine_session(launch) as session:
        err_console.print(
            f"engine ready at {launch.url} after {session.engine.ready_s or 0.0:.1f} s "
            f"(pid {session.engine.pid})"
        )
        yield session


def print_engine(j: Mapping[str, Any]) -> None:
    """The ``engine`` section in a few lines: readiness, exit, occupancy, self-reported energy."""
    e = j.get("engine")
    if not e:
        return
    version = (e.get("version") or {}).get("version") or "?"
    died = " [bold red]died during the run[/]" if e.get("died_during_run") else ""
    console.print(
        f"engine {escape(str(e.get('preset')))} (version {escape(str(version))}): ready after "
        f"{e.get('ready_s') or 0:.1f} s, exit {e.get('exit_code')} ({e.get('stopped_by') or 'by itself'})"
        f"{died}; log {escape(str(e.get('log_file')))}"
    )
    m = e.get("metrics")
    if m:
        samples = m.get("samples") or []
        running = [s["running"] for s in samples if "running" in s]
        peak = f", running ≤ {max(running):g}" if running else ""
        console.print(
            f"engine metrics: {len(samples)} scrapes of {escape(m['path'])}{peak}"
            + (f" ({escape(m['note'])})" if m.get("note") else "")
        )
    se = e.get("server_energy")
    if se:
        ratio = se.get("ratio")
        console.print(
            f"engine-reported energy: {se['sum_j']:.4g} J ({escape(se['method'])}, {se['scope']}); "
            f"meter {se.get('reference_j') or 0:.4g} J"
            + (f", ratio {ratio:.3f}" if ratio is not None else "")
        )


@contextlib.contextmanager
def launch_target(
    url: str | None, opts: LaunchOptions, *, model: str | None, meter: Any
) -> Iterator[tuple[str | None, EngineSession | None]]:
    """(``url``, ``None``), or the URL and session of the engine ``--launch``/``--engine``
    started (stopped on exit): for commands that take an upstream URL (``shape-compare``,
    ``shape-sweep``). ``meter`` is the command's :class:`~joulebench.cli.meter_options.MeterChoice`
    and ``--gpus`` its own (:mod:`joulebench.cli.meter_options`)."""
    from joulebench.cli.meter_options import current_gpus

    launch_plan = plan_launch(
        opts, url=url, model=model, gpus=current_gpus(), store=None, meter=meter.spec,
        fake_power_w=meter.options.get("fake_power_w", 100.0),
    )  # fmt: skip
    with launched(launch_plan) as session:
        yield (launch_plan.url if launch_plan is not None else url), session
