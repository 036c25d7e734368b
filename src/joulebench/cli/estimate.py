"""``joulebench estimate``: scale an energy per request to a day of traffic (kWh, households, CO2)."""

from __future__ import annotations

from pathlib import Path

import typer

from joulebench.analysis.estimate import (
    DEFAULT_HOUSEHOLD_KWH_PER_YEAR,
    MacroEstimate,
    estimate,
    per_request_from_store,
)
from joulebench.analysis.records import read_store
from joulebench.cli.common import console, handle_errors, print_json
from joulebench.errors import ConfigError
from joulebench.results.store import ResultStore


@handle_errors
def estimate_cmd(
    wh_per_request: float = typer.Option(
        None, "--wh-per-request", help="Energy per request in Wh (e.g. 0.12, the study's naive)."
    ),
    from_db: Path = typer.Option(
        None, "--from", help="Read the energy per request from this results store instead."
    ),
    cell: str = typer.Option(None, "--cell", help="With --from: a profile cell key (or prefix)."),
    run: str = typer.Option(None, "--run", help="With --from: a load run id (or profile run)."),
    accounting: str = typer.Option(
        "attributed_mean",
        "--accounting",
        help="With --from and a load run: paper_whole_window, idle_subtracted, steady_state or "
        "attributed_mean.",
    ),
    requests_per_day: float = typer.Option(..., "--requests-per-day", help="Requests per day."),
    country: str = typer.Option(
        None, "--country", help="ISO code (FR, FRA…) for the bundled grid-intensity table."
    ),
    grid_g_per_kwh: float = typer.Option(
        None, "--grid-g-per-kwh", help="Grid carbon intensity in gCO2e/kWh (instead of --country)."
    ),
    household_kwh_per_year: float = typer.Option(
        DEFAULT_HOUSEHOLD_KWH_PER_YEAR,
        "--household-kwh-per-year",
        help="Household consumption (default: French average used by the study).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Estimate kWh/day, household equivalents and kg CO2e/day at a given traffic."""
    if (wh_per_request is None) == (from_db is None):
        raise ConfigError("give exactly one of --wh-per-request X or --from DB")
    if from_db is None and (cell is not None or run is not None):
        raise ConfigError("--cell and --run need --from DB")
    method, source = "given", "given on the command line"
    if from_db is not None:
        with ResultStore(from_db, read_only=True) as store:
            contents = read_store(store)
        picked = per_request_from_store(contents, cell=cell, run=run, accounting=accounting)
        wh_per_request, method, source = picked.wh_per_request, picked.method, picked.source
    result = estimate(
        wh_per_request,
        requests_per_day,
        country=country,
        grid_g_per_kwh=grid_g_per_kwh,
        household_kwh_per_year=household_kwh_per_year,
        method=method,
        source=source,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        _print(result)


def _print(r: MacroEstimate) -> None:
    tag = " [bold yellow](ESTIMATED: no sensor)[/]" if "estimated" in r.method else ""
    console.print(f"energy per request: {r.wh_per_request:.4g} Wh — method {r.method}{tag}")
    console.print(f"  from: {r.source}")
    console.print(f"requests per day:   {r.requests_per_day:,.0f}")
    console.print(
        f"[bold]kWh per day:        {r.kwh_per_day:.4g}[/] ({r.kwh_per_year:,.4g} kWh/year)"
    )
    console.print(
        f"households:         {r.households:.4g} (at {r.household_kwh_per_year:,.0f} kWh/year each)"
    )
    if r.grid is None:
        console.print("kg CO2e per day:    — (give --country or --grid-g-per-kwh)")
    else:
        g = r.grid
        year = f", {g.year}" if g.year else ""
        console.print(f"kg CO2e per day:    {r.kg_co2e_per_day:.4g}")
        console.print(f"  grid: {g.country} {g.g_co2e_per_kwh:g} gCO2e/kWh ({g.source}{year})")


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_cmd)
