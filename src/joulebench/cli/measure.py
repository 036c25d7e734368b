"""``joulebench measure -- CMD [ARGS…]``: the energy of one command's whole run, like ``perf stat``.

The report goes to stderr (so CMD's own output stays clean on stdout); with ``--json`` one JSON
object goes to stdout and CMD's stdout is redirected to stderr. CMD's exit code is propagated
(128+N when a signal killed it); a command that cannot be found exits 127; Ctrl-C / SIGINT stops
CMD, prints and stores the partial measurement and exits 130 (SIGTERM: 143).
"""

from __future__ import annotations

import logging
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from joulebench.analysis import audit
from joulebench.cli.common import err_console, fail, handle_errors, print_json
from joulebench.cli.meter_options import AUTO_METER, HzOpt, IdleOpt, MeterChoice, meter_flags
from joulebench.errors import ConfigError
from joulebench.meters.command import ChildRun, measure_command
from joulebench.meters.timeline import PowerTimeline
from joulebench.meters.window import IdleBaseline, WindowResult

log = logging.getLogger(__name__)


def build_report(
    cmd: list[str],
    result: WindowResult,
    child: ChildRun,
    idle: IdleBaseline | None,
    timeline: PowerTimeline,
) -> dict[str, Any]:
    data = result.to_dict()
    checks = [
        c.to_dict() for c in audit.command_checks(result, interrupted=child.signum is not None)
    ]
    return {
        "command": cmd,
        "exit_code": child.exit_code,
        "interrupted": child.signum is not None,
        "signal": signal.Signals(child.signum).name if child.signum else None,
        "duration_s": result.duration_s,
        "energy_j": result.energy_j,
        "net_energy_j": result.net_energy_j,
        "idle_power_w": result.idle_power_w,
        "average_power_w": result.average_power_w,
        "too_short": result.too_short,
        "estimated": result.meter.is_estimated,
        "domains": data["domains"],
        "meter": result.meter.to_dict(),
        "idle": idle.to_dict() if idle else None,
        "timeline": {"hz": 1.0 / timeline.period_s, "samples": len(timeline.samples)},
        "checks": checks,
        "audit": [c for c in checks if not c["passed"]],
    }


def _fmt(value: float | None, unit: str, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def estimate_model_lines(parameters: dict[str, Any]) -> list[str]:
    """The sensorless estimator's constants, one line per estimator (also inside a combination)."""
    if parameters.get("estimate") is True:
        p = parameters
        return [
            f"CPU {p['cpu_tdp_w']:g} W TDP / {p['cpu_threads_per_package']} threads "
            f"({p['cpu_tdp_source']}), idle {p['cpu_idle_w']:.2f} W, RAM {p['ram_w_per_gb']:g} W/GB, "
            f"scope {p['scope']} — override with --cpu-tdp-w, --cpu-idle-w, --ram-w-per-gb"
        ]
    return [
        line
        for part in parameters.values()
        if isinstance(part, dict)
        for line in estimate_model_lines(part)
    ]


def print_report(report: dict[str, Any]) -> None:
    c = err_console
    status = "interrupted" if report["interrupted"] else f"exit {report['exit_code']}"
    c.print(f"\n[bold]joulebench measure[/]: {' '.join(report['command'])}  ({status})")
    if report["estimated"]:
        c.print(
            "[bold yellow]ESTIMATED: these numbers come from a model, not an energy sensor "
            f"(meter {report['meter']['name']}); see every parameter with --json.[/]"
        )
        for line in estimate_model_lines(report["meter"].get("parameters") or {}):
            c.print(f"  model        {escape(line)}")
    c.print(f"  duration     {report['duration_s']:.3f} s")
    if report["too_short"]:
        c.print("  energy       [red]window too short for the meter: no energy reported[/]")
    else:
        c.print(
            f"  energy       {_fmt(report['energy_j'], 'J')}  (average {_fmt(report['average_power_w'], 'W', 2)})"
        )
    idle = report["idle"]
    if idle:
        c.print(
            f"  idle power   {_fmt(report['idle_power_w'], 'W', 2)}  (over {idle['duration_s']:.2f} s)"
        )
        c.print(f"  net energy   {_fmt(report['net_energy_j'], 'J')}")
    else:
        c.print("  idle power   not measured (use --idle-s S for a baseline and net energy)")
    table = Table("domain", "energy", "net", "method", box=None, pad_edge=False)
    for d in report["domains"]:
        method = d["method"].upper() if d["method"] == "estimated" else d["method"]
        table.add_row(d["name"], _fmt(d["energy_j"], "J"), _fmt(d["net_energy_j"], "J"), method)
    c.print(table)
    for check in report["audit"]:
        c.print(f"  [red]audit failed[/] {check['name']}: {check['detail']}")
    if report.get("run_id"):
        c.print(f"  stored as run {report['run_id']}")


def _store(
    path: Path,
    report: dict[str, Any],
    timeline: PowerTimeline,
    config: dict[str, Any],
    name: str | None = None,
) -> str:
    from joulebench.environment import collect_environment
    from joulebench.results.store import ResultStore

    environment = collect_environment()
    with ResultStore(path) as db:
        run_id = db.start_run(
            "measure", config=config, environment=environment, meter=report["meter"], name=name
        )
        db.add_timeline(
            run_id, [(s.t_s, s.energy_j) for s in timeline.samples], report["meter"]["methods"]
        )
        db.add_audits(run_id, None, report["checks"])
        status = (
            "interrupted"
            if report["interrupted"]
            else ("done" if report["exit_code"] == 0 else "failed")
        )
        db.finish_run(run_id, status=status, summary={**report, "run_id": run_id})
    return run_id


@handle_errors
@meter_flags
def measure(
    cmd: list[str] = typer.Argument(None, help="The command to measure, after --."),
    meter: MeterChoice = AUTO_METER,
    idle_s: IdleOpt = 0.0,
    hz: HzOpt = 10.0,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    store: Path | None = typer.Option(
        None, "--store", help="Also record the run in this DuckDB file."
    ),
    name: str | None = typer.Option(None, "--name", help="Name of the stored run."),
) -> None:
    """Run CMD and report its energy per domain (with methods), duration, idle and net energy."""
    if not cmd:
        raise ConfigError(
            "give the command to measure after --, e.g. joulebench measure -- python work.py"
        )
    if store is not None:
        from joulebench.results.store import ResultStore, check_writable

        check_writable(store)
        ResultStore(store).close()  # schema version and lock problems surface now, not after CMD
    if shutil.which(cmd[0]) is None:
        raise fail(f"command not found: {cmd[0]}", 127)
    m = meter.open()
    started = time.time()
    try:
        run = measure_command(m, cmd, idle_s=idle_s, hz=hz, stdout_to_stderr=as_json)
    except KeyboardInterrupt:
        raise fail("interrupted during the idle baseline; nothing measured", 130) from None
    finally:
        m.close()
    result, child, idle, timeline = run.result, run.child, run.idle, run.timeline
    report = build_report(cmd, result, child, idle, timeline)
    report["started_at_unix_s"] = started
    if store is not None:
        config = {
            "command": cmd,
            "meter": meter.spec,
            "idle_s": idle_s,
            "hz": hz,
            "name": name,
            **meter.flags(),
        }
        report["run_id"] = _store(store, report, timeline, config, name)
    if as_json:
        print_json(report)
    else:
        print_report(report)
    code = 128 + child.signum if child.signum is not None else child.exit_code
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("measure", context_settings={"allow_interspersed_args": False})(measure)


__all__ = ["build_report", "register"]
