"""Carbon intensity of electricity per country: the bundled table and its look-up.

``joulebench/data/grid_intensity.csv`` holds gCO2e/kWh of electricity generation per country,
each row with its source and year; a user may give a value of their own instead
(:class:`GridIntensity` with code ``custom``). The macro estimate turns kWh into kg CO2e with it.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

from joulebench.errors import UnknownName


@dataclass(frozen=True, slots=True)
class GridIntensity:
    """Carbon intensity of one country's electricity (or a user-given value)."""

    code: str
    country: str
    g_co2e_per_kwh: float
    year: int | None
    source: str


@functools.lru_cache(maxsize=1)
def _rows() -> tuple[dict[str, str], ...]:
    """The bundled CSV's rows, read once."""
    text = resources.files("joulebench").joinpath("data/grid_intensity.csv").read_text("utf-8")
    return tuple(csv.DictReader(io.StringIO(text)))


@functools.lru_cache(maxsize=1)
def grid_table() -> dict[str, GridIntensity]:
    """The bundled table, keyed by ISO 3166-1 alpha-2 code (upper case)."""
    table: dict[str, GridIntensity] = {}
    for row in _rows():
        entry = GridIntensity(
            code=row["iso2"].upper(),
            country=row["country"],
            g_co2e_per_kwh=float(row["g_co2e_per_kwh"]),
            year=int(row["year"]),
            source=row["source"],
        )
        table[entry.code] = entry
    return table


@functools.lru_cache(maxsize=1)
def _iso3_to_iso2() -> dict[str, str]:
    return {row["iso3"].upper(): row["iso2"].upper() for row in _rows()}


def grid_intensity(country: str) -> GridIntensity:
    """Look up a country by ISO alpha-2 (``FR``) or alpha-3 (``FRA``) code, any case."""
    code = country.strip().upper()
    table = grid_table()
    code = _iso3_to_iso2().get(code, code)
    if code not in table:
        raise UnknownName("country code", country, list(table))
    return table[code]
