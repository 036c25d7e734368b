"""``joulebench sweep FILE.yaml``: a resumable grid of profile cells with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from joulebench.cli.common import (
    console,
    err_console,
    fail,
    flag_group,
    handle_errors,
    print_json,
)
from joulebench.cli.contention_options import (
    NO_CONTENTION_FLAGS,
    ContentionFlags,
    contention_flags,
)
from joulebench.cli.meter_options import AUTO_METER, MeterChoice, meter_flags
from joulebench.cli.profile import cpu_peak_from_flags
from joulebench.progress import ProgressEvent

if TYPE_CHECKING:
    from joulebench.profile.sweep import SweepSummary


def _cell_label(c: Any) -> str:
    extra = " compile" if c.compile else ""
    model = Path(c.model).name if "/" in c.model else c.model  # a path: its last part
    return f"{model} {c.precision} b={c.batch_size} {c.prompts} {c.bucketing}{extra}"


DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="list the cells and an estimated time")]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="DuckDB results file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as JSON")]
CpuPeakOpt = Annotated[float | None, typer.Option("--cpu-peak-gflops")]
CpuBandwidthOpt = Annotated[float | None, typer.Option("--cpu-bandwidth-gbs")]
SweepIdleOpt = Annotated[
    float | None,
    typer.Option(
        "--idle-s",
        min=0.0,
        help="idle baseline per model load (default: the file's idle_s)",
    ),
]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="run each cell as a task: local (this process) or ray (one Ray task per "
        "cell, results gathered into the one store); default: in-process sweep",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster (host:6379, ray://host:10001)"),
]
GpusPerCellOpt = Annotated[
    float | None,
    typer.Option("--gpus-per-cell", min=0.0, help="Ray: GPUs per cell (cuda: 1, else 0)"),
]
CpusPerCellOpt = Annotated[
    float | None, typer.Option("--cpus-per-cell", min=0.0, help="Ray: CPUs per cell (1)")
]


@dataclass(frozen=True, slots=True)
class ExecutorFlags:
    """``--executor`` and the Ray flags as given (``None``: not given); :func:`executor_flags`
    hands the command these in place of its ``executor`` parameter."""

    executor: ExecutorOpt = None
    ray_address: RayAddressOpt = None
    gpus_per_cell: GpusPerCellOpt = None
    cpus_per_cell: CpusPerCellOpt = None

    def make(self, device: str) -> Any:
        """The executor to fan out on (None: the in-process sweep); the Ray flags without
        ``--executor ray`` are an error naming them. A Ray cell's GPUs default to 1 on
        ``device`` cuda, else 0; its CPUs to 1."""
        from joulebench.errors import ConfigError
        from joulebench.profile.fanout import make_executor

        name = self.executor
        ray = {"--ray-address": self.ray_address, "--gpus-per-cell": self.gpus_per_cell,
               "--cpus-per-cell": self.cpus_per_cell}  # fmt: skip
        if name is None or name.strip().lower() != "ray":
            ex = None if name is None else make_executor(name)  # unknown: lists the known ones
            given = [flag for flag, value in ray.items() if value is not None]
            if given:
                raise ConfigError(f"{', '.join(given)} need(s) --executor ray")
            return ex
        gpus = self.gpus_per_cell
        if gpus is None:
            gpus = 1.0 if device.strip().lower().startswith("cuda") else 0.0
        cpus = 1.0 if self.cpus_per_cell is None else self.cpus_per_cell
        return make_executor(
            "ray", address=self.ray_address, gpus_per_cell=gpus, cpus_per_cell=cpus
        )


IN_PROCESS = ExecutorFlags()
"""The default of an ``executor: ExecutorFlags`` parameter (:func:`executor_flags` replaces it)."""
executor_flags = flag_group(ExecutorFlags, "executor")


def print_plan(cfg: Any, json_out: bool) -> None:
    """``--dry-run``: the cells, the model loads and the estimated time (table or JSON)."""
    from joulebench.profile.sweep import check_sources
    from joulebench.profile.sweep import dry_run as plan

    check_sources(cfg)  # a misspelt model, precision or prompt set fails here
    p = plan(cfg)
    if json_out:
        print_json(
            {
                "name": cfg.name,
                "cells": [c.model_dump(mode="json") | {"cell_key": c.cell_key()} for c in p.cells],
                "model_loads": p.groups,
                "estimate_min_s": p.estimate_min_s,
                "estimate_max_s": p.estimate_max_s,
            }
        )
        return
    table = Table(title=f"sweep {escape(cfg.name)}: {len(p.cells)} cells, {p.groups} model loads")
    for col in ("#", "cell", "cell_key"):
        table.add_column(col)
    for i, c in enumerate(p.cells, 1):
        table.add_row(str(i), escape(_cell_label(c)), escape(c.cell_key()))
    console.print(table)
    window = (
        f"{cfg.min_window_s:g} s"
        if cfg.min_window_s is not None
        else "0.25–1 s (auto: 10 meter update periods, ≥ 0.25 s)"
    )
    console.print(
        f"estimated time: {p.estimate_min_s / 60:.1f}–{p.estimate_max_s / 60:.1f} min "
        f"(min to max repeats, {window} windows, model loads ~10 s each)"
    )


class SweepProgress:
    """The progress bar of a running sweep and the lines its events print above it."""

    def __init__(self, name: str, total: int, out: Any, *, estimated_noted: bool) -> None:
        self.estimated_noted = estimated_noted
        self.failures: list[str] = []
        self.progress = Progress(
            TextColumn(
                "{task.description}",
                table_column=Column(max_width=36, no_wrap=True, overflow="ellipsis"),
            ),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=out,
            transient=False,
        )
        self.task = self.progress.add_task(f"sweep {escape(name)}", total=total)

    def _print(self, text: str, **kwargs: Any) -> None:
        self.progress.console.print(text, **kwargs)

    def on_event(self, e: ProgressEvent) -> None:
        kind = e["event"]
        if kind == "start" and e["resumed"]:
            self._print(f"resuming run {e['run_id']}")
        elif kind == "skip":
            self.progress.advance(self.task)
            self._print(
                escape(f"skip (done) {_cell_label(e['cell'])} [{e['cell_key']}]"),
                highlight=False,
            )
        elif kind == "cell_start":
            self.progress.update(self.task, description=escape(_cell_label(e["cell"])))
        elif kind == "done":
            self.progress.advance(self.task)
            self._done(e)
        elif kind == "failed":
            self.progress.advance(self.task)
            self.failures.append(f"{_cell_label(e['cell'])}: {e['error']}")
            self._print(
                f"[bold red]FAILED[/] {escape(_cell_label(e['cell']))}: {escape(str(e['error']))}",
                highlight=False,
            )

    def _done(self, e: ProgressEvent) -> None:
        r = e["result"]
        if r.get("estimated") and not self.estimated_noted:  # workers opened their meters
            self.estimated_noted = True
            self._print("[bold yellow]ENERGY IS ESTIMATED[/] (no sensor where the cells ran)")
        bad = [a["name"] for a in r["audit"] if not a["passed"]]
        note = f" [red]audits failed: {', '.join(bad)}[/]" if bad else ""
        self._print(
            escape(f"done {_cell_label(e['cell'])} [{e['cell_key']}]")
            + f" in {e['elapsed_s']:.1f} s{note}",
            highlight=False,
        )


def _open_runner(meter: MeterChoice, ex: Any, out: Any) -> Any:
    """The meter the in-process sweep reads (None with an executor, which is started here)."""
    m = None if ex is not None else meter.open()
    if m is not None and "estimated" in {str(v) for v in m.domains.values()}:
        out.print("[bold yellow]ENERGY IS ESTIMATED[/] (no sensor on this machine)")
    if ex is not None:
        ex.start()  # join/start the cluster and check its resources before any progress bar
        out.print(
            f"executor {ex.name}: every task opens its own '{meter.spec}' meter where it runs"
        )
    return m


def run_with_progress(
    cfg: Any,
    path: Path,
    meter: MeterChoice,
    ex: Any,
    out: Any,
    *,
    idle_s: float | None,
    hardware: Any,
) -> tuple[SweepSummary, list[str]]:
    """Run the sweep into the store at ``path`` (in process, or on ``ex``) under a progress bar;
    its summary and the failed cells. Ctrl-C leaves the run ``interrupted`` and exits 130."""
    import warnings

    from joulebench.errors import JoulebenchWarning
    from joulebench.profile.fanout import run_sweep_fanout
    from joulebench.profile.sweep import run_sweep
    from joulebench.results.store import ResultStore

    m = _open_runner(meter, ex, out)
    bar = SweepProgress(cfg.name, len(cfg.cells()), out, estimated_noted=m is not None)
    try:
        with ResultStore(path) as db, bar.progress, warnings.catch_warnings():
            warnings.simplefilter("ignore", JoulebenchWarning)  # stored per cell, printed above
            if m is not None:
                summary = run_sweep(
                    cfg, db, m, on_event=bar.on_event, idle_s=idle_s, hardware=hardware
                )
            else:
                assert ex is not None
                summary = run_sweep_fanout(
                    cfg, db, meter.spec, meter.options, executor=ex, on_event=bar.on_event,
                    idle_s=idle_s, hardware=hardware,
                )  # fmt: skip
    except KeyboardInterrupt:
        raise fail(
            f"interrupted: run marked 'interrupted' in {path}; the same command resumes it "
            "(done cells are skipped, the cell cut short is redone)",
            130,
        ) from None
    finally:
        if m is not None:
            m.close()
        if ex is not None:
            ex.close()
    return summary, bar.failures


@handle_errors
@meter_flags
@contention_flags
@executor_flags
def sweep(
    file: Annotated[Path, typer.Argument(help="sweep YAML file")],
    dry_run: DryRunOpt = False,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
    cpu_peak_gflops: CpuPeakOpt = None,
    cpu_bandwidth_gbs: CpuBandwidthOpt = None,
    meter: MeterChoice = AUTO_METER,
    idle_s: SweepIdleOpt = None,
    executor: ExecutorFlags = IN_PROCESS,
    contention: ContentionFlags = NO_CONTENTION_FLAGS,
) -> None:
    """Run (or resume) a sweep: models × precisions × batch sizes × bucketing × compile × prompts."""
    from joulebench.profile.sweep import load_sweep, parse_sweep
    from joulebench.results.store import DEFAULT_STORE, check_writable

    cfg = load_sweep(file)
    overrides = contention.settings()
    if overrides:  # the flags win over the file's keys; validated like the file
        cfg = parse_sweep({**cfg.model_dump(), **overrides}, str(file))
    if dry_run:
        print_plan(cfg, json_out)
        return
    path = store or DEFAULT_STORE
    check_writable(path)
    hardware = cpu_peak_from_flags(cpu_peak_gflops, cpu_bandwidth_gbs)
    # With --json stdout holds the summary object alone: progress and notes go to stderr.
    out = err_console if json_out else console
    ex = executor.make(cfg.device)
    summary, failures = run_with_progress(
        cfg, path, meter, ex, out, idle_s=idle_s, hardware=hardware
    )
    summary["store"] = str(path)
    if json_out:
        print_json(summary)
    else:
        console.print(
            f"sweep {escape(cfg.name)}: {summary['done']} done, {summary['skipped']} skipped (already done), "
            f"{summary['failed']} failed — run {summary['run_id']} in {path}"
        )
    if failures:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
