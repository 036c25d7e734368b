"""``joulebench results``: list runs and export the store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from joulebench.cli.common import console, handle_errors, print_json
from joulebench.results.store import DEFAULT_STORE, ResultStore

results_app = typer.Typer(help="Inspect and export the results store.", no_args_is_help=True)


@results_app.command("list")
@handle_errors
def list_runs(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="DuckDB results file."),
    kind: str | None = typer.Option(
        None, "--kind", help="Only runs of this kind (measure, profile…)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the runs in a store."""
    with ResultStore(store, read_only=True) as db:
        rows = db.runs(kind)
    if as_json:
        print_json(rows)
        return
    table = Table("run_id", "kind", "name", "status", "created_at")
    for r in rows:
        table.add_row(r["run_id"], r["kind"], r["name"] or "", r["status"], str(r["created_at"]))
    console.print(table)


@results_app.command("export")
@handle_errors
def export(
    out: Path = typer.Argument(..., help="Directory to write one file per table into."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="DuckDB results file."),
    fmt: str = typer.Option("parquet", "--format", help="parquet, csv or json."),
) -> None:
    """Export every table of the store to Parquet, CSV or JSON."""
    with ResultStore(store, read_only=True) as db:
        written = db.export(out, fmt)
    for path in written:
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")
