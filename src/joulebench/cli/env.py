"""``joulebench env``: the machine, the libraries and which meters can measure here."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from joulebench.cli.common import console, handle_errors, print_json
from joulebench.cli.meter_options import PrometheusOpt
from joulebench.environment import collect_environment


@handle_errors
def env(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    prometheus_url: PrometheusOpt = None,
) -> None:
    """Show OS, CPU, RAM, GPUs, library versions and every meter backend's availability."""
    info = collect_environment(prometheus_url=prometheus_url)
    if as_json:
        print_json(info)
        return
    cpu = info["cpu"]
    console.print(
        f"[bold]joulebench[/] {info['joulebench']}  ·  Python {info['python']['version']}"
    )
    console.print(f"OS      {info['os']['platform']}")
    console.print(
        f"CPU     {cpu['model']} ({cpu['logical_cores']} logical / {cpu['physical_cores']} physical cores)"
    )
    console.print(f"RAM     {info['ram_gb']} GB")
    gpus = info["gpus"]["devices"]
    if gpus:
        for g in gpus:
            console.print(f"GPU {g['nvml_index']}   {g['name']}  driver {g['driver']}  {g['uuid']}")
    else:
        console.print(f"GPU     none ({escape(info['gpus'].get('note', 'NVML unavailable'))})")
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items() if v)
    console.print(f"Libraries  {libs}")
    table = Table("meter", "status", "why / how to enable", title="Meter backends")
    for name, m in info["meters"].items():
        status = "[green]available[/]" if m["available"] else "[red]unavailable[/]"
        detail = m["reason"] if m["available"] else f"{m['reason']} — {m['hint']}".rstrip(" —")
        table.add_row(name, status, escape(detail))
    console.print(table)
    if not any(
        m["available"] for k, m in info["meters"].items() if k in ("nvml", "rapl", "prometheus")
    ):
        console.print(
            "[bold yellow]No energy sensor here: `--meter auto` will use the sensorless estimator "
            "and every number will be ESTIMATED.[/]"
        )


def register(app: typer.Typer) -> None:
    app.command("env")(env)
