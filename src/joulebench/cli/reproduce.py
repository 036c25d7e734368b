"""``joulebench reproduce``: the study's three studies on this machine, then the HTML report.

``--launch CMD --url URL`` or ``--engine NAME`` runs the serving and shaping studies against an
engine joulebench starts after the sweeps and stops at the end (:mod:`joulebench.reproduce.run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from joulebench.cli.common import console, err_console, flag_group, handle_errors, print_json
from joulebench.cli.engine_options import ENGINE_PANEL, NO_LAUNCH, engine_flags, plan_launch
from joulebench.cli.meter_options import AUTO_METER, MeterChoice, current_gpus, meter_flags
from joulebench.errors import ConfigError
from joulebench.load.engines.session import LaunchOptions, LaunchPlan
from joulebench.progress import ProgressEvent

if TYPE_CHECKING:
    from joulebench.reproduce.plan import ReproducePlan
    from joulebench.reproduce.run import ReproduceResult


def _split(text: str | None) -> list[str]:
    return [] if not text else [p.strip() for p in text.split(",") if p.strip()]


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


#: Events printed on stderr even with ``--json``: the engine's life and what was not run.
_ENGINE_EVENTS = ("engine_start", "engine_ready", "engine_stopped", "note")


def _engine_progress(e: ProgressEvent) -> None:
    """Print an engine event or a note (on stderr: ``--json`` keeps them)."""
    kind = e["event"]
    if kind == "engine_start":
        err_console.print(f"starting engine ({escape(e['engine'])}); log: {escape(e['log'])}")
    elif kind == "engine_ready":
        err_console.print(
            f"engine ready at {escape(e['url'])} after {e['ready_s'] or 0.0:.1f} s (pid {e['pid']})"
        )
    elif kind == "engine_stopped":
        err_console.print(
            f"engine stopped: exit {e['exit_code']} ({e['stopped_by'] or 'by itself'}); "
            f"log: {escape(e['log'])}"
        )
    elif kind == "note":
        err_console.print(
            f"[yellow]{escape(e['study'])}: not run as planned:[/] {escape(e['note'])}"
        )


def _progress(e: ProgressEvent) -> None:
    if e["event"] in _ENGINE_EVENTS:
        _engine_progress(e)
        return
    kind, study = e["event"], e.get("study", "")
    if kind == "study_start":
        console.print(f"[bold]{study}[/] study: {e['total']} runs")
    elif kind == "study_failed":
        console.print(f"[bold red]{study} study stopped[/]: {escape(str(e['error']))}")
    elif kind == "report_start":
        console.print("[bold]report[/]: drawing figures")
    elif kind in ("skip", "done", "failed"):
        cell = e.get("cell")
        label = e.get("label") or (
            f"{cell.model} {cell.precision} b={cell.batch_size} {cell.bucketing}" if cell else "?"
        )
        if kind == "skip":
            console.print(f"  skip (already done) {escape(label)}", emoji=False)
        elif kind == "failed":
            console.print(
                f"  [bold red]FAILED[/] {escape(label)}: {escape(str(e.get('error')))}", emoji=False
            )
        else:
            took = f" in {e['elapsed_s']:.1f} s" if "elapsed_s" in e else ""
            console.print(f"  done {escape(label)}{took}", emoji=False)


def _print_result(r: ReproduceResult) -> None:
    table = Table(title="Headline numbers (this machine)")
    for col in ("study", "what", "value", "method", "note"):
        table.add_column(col)
    for h in r.headlines:
        method = h.method.upper() if h.estimated else h.method
        spread = "" if h.halfwidth is None else f" ± {_fmt(h.halfwidth)}"
        value = "" if h.value is None else f"{_fmt(h.value)}{spread} {h.unit}"
        table.add_row(*(Text(x) for x in (h.study, h.label, value, method, h.note)))
    console.print(table)
    if r.estimated:
        console.print(
            "[bold yellow]ESTIMATED:[/] no energy sensor was read; energy comes from the "
            "sensorless estimator (CPU time × power model + idle share), not a measurement."
        )
    checks = ", ".join(f"{k} ×{v}" for k, v in r.audit_failed_checks.items())
    colour = "bold red" if r.audit_failures else "green"
    console.print(
        f"[{colour}]audit failures: {r.audit_failures}[/]" + (f" ({checks})" if checks else "")
    )
    for study in r.failed_studies:
        console.print(f"[bold red]study with failures:[/] {study}: {r.studies[study]}")
    console.print(f"store: {r.store}")
    console.print(f"[bold]report: {r.index_html}[/] (finished in {r.duration_s / 60:.1f} min)")


@dataclass(frozen=True, slots=True)
class PlanChoice:
    """Which plan to run, as the flags name it: bundled (``--quick``, the default, or
    ``--full``) or from a file (``--plan``), with ``--models`` and ``--skip`` applied."""

    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny models on the CPU (≤ 10 min on 2 cores).")
    ] = False
    full: Annotated[
        bool, typer.Option("--full", help="The study's model shapes and grid on a CUDA GPU.")
    ] = False
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan", help="A plan YAML instead of the bundled --quick/--full plan."),
    ] = None
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated model sources: the precision study runs all, batch and "
            "serving the first.",
        ),
    ] = None
    skip: Annotated[
        str | None,
        typer.Option("--skip", help="Studies to leave out: precision,batch,serving,shaping."),
    ] = None

    def resolve(self, *, force: bool) -> ReproducePlan:
        """The plan, its models and skipped studies applied, checked against the device
        (``force``: a GPU plan may run on the CPU)."""
        from joulebench.reproduce.plan import bundled_plan, load_plan
        from joulebench.reproduce.run import check_device

        if self.quick and self.full:
            raise ConfigError("choose one of --quick and --full")
        if self.plan_file is not None and (self.quick or self.full):
            raise ConfigError("--plan replaces the bundled plans: drop --quick/--full")
        if self.plan_file:
            plan = load_plan(self.plan_file)
        else:
            plan = bundled_plan("full" if self.full else "quick")
        if self.models:
            plan = plan.with_models(_split(self.models))
        if self.skip:
            plan = plan.without(_split(self.skip))
        return check_device(plan, force=force)


BUNDLED_QUICK = PlanChoice()
"""The default of a ``choice: PlanChoice`` parameter (:func:`plan_flags` replaces it)."""
plan_flags = flag_group(PlanChoice, "choice")


@handle_errors
@meter_flags
@engine_flags
@plan_flags
def reproduce(
    choice: PlanChoice = BUNDLED_QUICK,
    out: Annotated[
        Path, typer.Option("--out", help="Report directory (index.html, figures/).")
    ] = Path("joulebench-report"),
    store: Annotated[
        Path | None,
        typer.Option("--store", help="DuckDB results file (default: <out>/results.duckdb)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Run a GPU plan on the CPU when no GPU is visible.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the plan, run nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    meter: MeterChoice = AUTO_METER,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            rich_help_panel=ENGINE_PANEL,
            help="Where the --launch engine answers (with --engine: where it is told to listen).",
        ),
    ] = None,
    launching: LaunchOptions = NO_LAUNCH,
) -> None:
    """Rerun the study: precision × model, batch size, serving under arrival patterns; then report.

    With --launch CMD --url URL, or --engine NAME (serving the plan's serving model, or the first
    of --models), the serving and shaping studies run against that engine instead of the
    embedded server: started once after the sweeps, idle measured with its model loaded, stopped
    at the end (also on failure and Ctrl-C). The embedded server's schedulers cannot be chosen
    there: each arrival pattern runs once, against the engine, and a note says what was not
    applied. Every stored serving run and the --json result get an `engine` section.
    """
    plan = choice.resolve(force=force)
    store_path = store or out / "results.duckdb"
    launch_plan = _launch_plan(plan, url, launching, store_path, meter)
    if dry_run:
        if launch_plan is not None:
            err_console.print(f"engine ({launch_plan.name}): {escape(str(launch_plan.command))}")
        print_json(plan.model_dump(mode="json"))
        return
    result = _run(plan, store_path, out, meter, as_json, launch_plan)
    if as_json:
        print_json(result.to_dict())
    else:
        _print_result(result)
    if result.failed_studies:
        err_console.print("some studies had failures (see above); the report shows what ran")
        raise typer.Exit(1)


def _launch_plan(
    plan: ReproducePlan,
    url: str | None,
    launching: LaunchOptions,
    store_path: Path,
    meter: MeterChoice,
) -> LaunchPlan | None:
    """The engine to launch for the serving and shaping studies (``None``: the embedded
    server); refuses --url without an engine and an engine without a serving study."""
    from joulebench.reproduce.run import serving_studies

    if url and not launching.wanted:
        raise ConfigError(
            "--url names where a launched engine answers: add --launch CMD or --engine NAME "
            "(without them the serving studies start the embedded server)"
        )
    if not launching.wanted:
        return None
    if not serving_studies(plan) or plan.serving is None:
        raise ConfigError(
            "--launch/--engine serve the plan's serving and shaping studies, and this plan "
            "has none (absent or --skip'ped): drop --launch/--engine"
        )
    return plan_launch(
        launching, url=url, model=plan.serving.model, gpus=current_gpus(), store=store_path,
        meter=meter.spec, fake_power_w=meter.options.get("fake_power_w", 100.0),
    )  # fmt: skip


def _run(
    plan: ReproducePlan,
    store_path: Path,
    out: Path,
    meter: MeterChoice,
    as_json: bool,
    launch_plan: LaunchPlan | None,
) -> ReproduceResult:
    """Open the meter, run every study of the plan and write the report."""
    import warnings

    from joulebench.errors import JoulebenchWarning
    from joulebench.reproduce.run import run_reproduce

    m = meter.open()
    if "estimated" in {str(v) for v in m.domains.values()} and not as_json:
        console.print("[bold yellow]ENERGY IS ESTIMATED[/] (no sensor on this machine)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JoulebenchWarning)  # stored as audits, counted below
            return run_reproduce(
                plan,
                store_path=store_path,
                out_dir=out,
                meter=m,
                on_event=_engine_progress if as_json else _progress,
                launch=launch_plan,
            )
    finally:
        m.close()


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
