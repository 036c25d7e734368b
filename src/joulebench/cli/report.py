"""``joulebench report``: figures and one self-contained HTML page from a results store."""

from __future__ import annotations

from pathlib import Path

import typer

from joulebench.cli.common import console, handle_errors, print_json
from joulebench.report.build import build_report
from joulebench.results.store import DEFAULT_STORE


@handle_errors
def report_cmd(
    store: Path = typer.Argument(DEFAULT_STORE, help="DuckDB results file to report on."),
    out: Path = typer.Option(Path("joulebench-report"), "--out", help="Output directory."),
    title: str = typer.Option("joulebench report", "--title", help="Page title."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write figures (PNG, SVG) and a self-contained index.html from a results store."""
    result = build_report(store, out, title=title)
    if as_json:
        print_json(result.to_dict())
        return
    for f in result.figures:
        flag = " [bold yellow]ESTIMATED[/]" if f.estimated else ""
        console.print(f"figure {f.key}: {f.png} (+ .svg) — method {', '.join(f.methods)}{flag}")
    for m in result.missing:
        console.print(f"[dim]not drawn: {m.key} — {m.reason}[/]")
    console.print(f"[bold]report: {result.index_html}[/]")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
