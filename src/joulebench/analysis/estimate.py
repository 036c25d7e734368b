"""Macro estimate: energy per request × requests per day → kWh/day, households, kg CO2e/day.

The study's own example: 1e6 requests/day at 1.2e-1 Wh/request is 120 kWh/day; at 1.1e-3 Wh it
is 1.1 kWh/day. Households default to the French average the study used (4,255 kWh/year). CO2
comes from the bundled grid-intensity table (:mod:`joulebench.analysis.grid_intensity`: gCO2e/kWh
of electricity generation per country, each row with its source and year) or a user-given value.

The per-request energy either is given or is read from a results store (a load run's summary or a
profile cell), and always keeps the method label of the number it came from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from joulebench.analysis.grid_intensity import GridIntensity, grid_intensity
from joulebench.analysis.records import ACCOUNTINGS, LoadRun, ProfileCell, StoreContents
from joulebench.errors import ConfigError, UnknownName
from joulebench.validation import validation_message

#: French average household consumption used by the study (kWh per year).
DEFAULT_HOUSEHOLD_KWH_PER_YEAR = 4255.0
DAYS_PER_YEAR = 365.0
J_PER_WH = 3600.0


class EstimateInput(BaseModel):
    """What the user asks: validated, with messages that say what to fix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wh_per_request: float = Field(gt=0, allow_inf_nan=False)
    requests_per_day: float = Field(gt=0, allow_inf_nan=False)
    household_kwh_per_year: float = Field(DEFAULT_HOUSEHOLD_KWH_PER_YEAR, gt=0, allow_inf_nan=False)
    country: str | None = None
    grid_g_per_kwh: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_grid_source(self) -> EstimateInput:
        if self.country is not None and self.grid_g_per_kwh is not None:
            raise ValueError("give either a country or a grid intensity, not both")
        return self


_FLAG_NAMES = {
    "wh_per_request": "--wh-per-request",
    "requests_per_day": "--requests-per-day",
    "household_kwh_per_year": "--household-kwh-per-year",
    "grid_g_per_kwh": "--grid-g-per-kwh",
    "country": "--country",
}


def _config_error(exc: ValidationError) -> ConfigError:
    return ConfigError(
        validation_message(
            exc, "invalid estimate input", name=_FLAG_NAMES, top="input", show_input=True
        )
    )


@dataclass(frozen=True, slots=True)
class MacroEstimate:
    """The scaled-up figure, with where its inputs came from."""

    wh_per_request: float
    requests_per_day: float
    kwh_per_day: float
    kwh_per_year: float
    household_kwh_per_year: float
    households: float
    grid: GridIntensity | None
    kg_co2e_per_day: float | None
    method: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "wh_per_request": self.wh_per_request,
            "requests_per_day": self.requests_per_day,
            "kwh_per_day": self.kwh_per_day,
            "kwh_per_year": self.kwh_per_year,
            "household_kwh_per_year": self.household_kwh_per_year,
            "households": self.households,
            "grid": None if self.grid is None else asdict(self.grid),
            "kg_co2e_per_day": self.kg_co2e_per_day,
            "method": self.method,
            "source": self.source,
        }


def estimate(
    wh_per_request: float,
    requests_per_day: float,
    *,
    country: str | None = None,
    grid_g_per_kwh: float | None = None,
    household_kwh_per_year: float = DEFAULT_HOUSEHOLD_KWH_PER_YEAR,
    method: str = "given",
    source: str = "given on the command line",
) -> MacroEstimate:
    """Scale a per-request energy to a day of traffic.

    ``method`` is the label of the per-request number (``estimated``, ``counter``…, or ``given``
    when the user typed it); ``source`` says where it came from.
    """
    try:
        spec = EstimateInput(
            wh_per_request=wh_per_request,
            requests_per_day=requests_per_day,
            household_kwh_per_year=household_kwh_per_year,
            country=country,
            grid_g_per_kwh=grid_g_per_kwh,
        )
    except ValidationError as exc:
        raise _config_error(exc) from None
    grid: GridIntensity | None = None
    if spec.country is not None:
        grid = grid_intensity(spec.country)
    elif spec.grid_g_per_kwh is not None:
        grid = GridIntensity("custom", "user-given", spec.grid_g_per_kwh, None, "given by the user")
    kwh_per_day = spec.wh_per_request * spec.requests_per_day / 1000.0
    kwh_per_year = kwh_per_day * DAYS_PER_YEAR
    kg = None if grid is None else kwh_per_day * grid.g_co2e_per_kwh / 1000.0
    if not all(math.isfinite(v) for v in (kwh_per_day, kwh_per_year)):
        raise ConfigError("the estimate overflows: check --wh-per-request and --requests-per-day")
    return MacroEstimate(
        wh_per_request=spec.wh_per_request,
        requests_per_day=spec.requests_per_day,
        kwh_per_day=kwh_per_day,
        kwh_per_year=kwh_per_year,
        household_kwh_per_year=spec.household_kwh_per_year,
        households=kwh_per_year / spec.household_kwh_per_year,
        grid=grid,
        kg_co2e_per_day=kg,
        method=method,
        source=source,
    )


@dataclass(frozen=True, slots=True)
class PerRequestEnergy:
    """A per-request energy read from a store, with its method label and provenance."""

    wh_per_request: float
    method: str
    source: str


def per_request_from_store(
    contents: StoreContents,
    *,
    cell: str | None = None,
    run: str | None = None,
    accounting: str = "attributed_mean",
) -> PerRequestEnergy:
    """Pick the per-request energy of one load run or one profile cell of a store.

    A load run gives its summary's ``per_request_wh[accounting]``; a profile cell gives
    prefill + decode gross energy per request. Without ``cell``/``run`` the store must hold
    exactly one candidate; otherwise the error lists them.
    """
    if accounting not in ACCOUNTINGS:
        raise UnknownName("accounting", accounting, list(ACCOUNTINGS))
    loads = {lr.run.run_id: lr for lr in contents.load_runs}
    cells = [c for c in contents.cells if c.ok]
    if cell is not None:
        matches = [c for c in cells if c.cell_key == cell or c.cell_key.startswith(cell)]
        if run is not None:
            matches = [c for c in matches if c.run_id == run]
        exact = [c for c in matches if c.cell_key == cell]
        matches = exact or matches  # a full key wins over longer keys it is a prefix of
        if len(matches) != 1:
            known = [c.cell_key for c in cells if run is None or c.run_id == run]
            what = "no" if not matches else "more than one"
            raise ConfigError(
                f"{what} completed profile cell matches --cell {cell!r}; "
                f"known: {', '.join(known) or '(none)'}"
            )
        return _from_cell(matches[0])
    if run is not None:
        if run in loads:
            return _from_load(loads[run], accounting)
        run_cells = [c for c in cells if c.run_id == run]
        if len(run_cells) == 1:
            return _from_cell(run_cells[0])
        if run_cells:
            raise ConfigError(
                f"run {run!r} has {len(run_cells)} cells: choose one with --cell "
                f"({', '.join(c.cell_key for c in run_cells)})"
            )
        known = sorted(loads) + sorted({c.run_id for c in cells})
        raise ConfigError(
            f"no load run or profiled run {run!r}; known: {', '.join(known) or '(none)'}"
        )
    candidates = [f"--run {r}" for r in loads] + [f"--cell {c.cell_key}" for c in cells]
    if len(candidates) != 1:
        raise ConfigError(
            "the store holds "
            + (
                f"{len(candidates)} candidates; choose one: {', '.join(candidates)}"
                if candidates
                else "no completed load run or profile cell"
            )
        )
    return _from_load(next(iter(loads.values())), accounting) if loads else _from_cell(cells[0])


def _from_load(lr: LoadRun, accounting: str) -> PerRequestEnergy:
    wh = lr.per_request_wh(accounting)
    if wh is None:
        have = [a for a in ACCOUNTINGS if lr.per_request_wh(a) is not None]
        raise ConfigError(
            f"load run {lr.run.run_id} has no {accounting!r} per-request energy; "
            f"available: {', '.join(have) or '(none)'}"
        )
    if not wh > 0:  # a net accounting can be ≤ 0: noise, not a figure to scale to a day
        raise ConfigError(
            f"load run {lr.run.run_id}'s {accounting!r} per-request energy is {wh:.3g} Wh, not a "
            "positive energy (idle subtraction larger than the work): pick another --accounting"
        )
    return PerRequestEnergy(
        wh, lr.run.method, f"load run {lr.run.run_id} ({lr.label}), {accounting}"
    )


def _from_cell(c: ProfileCell) -> PerRequestEnergy:
    j = c.per_request_j()
    if j is None:
        raise ConfigError(f"profile cell {c.cell_key} has no prefill and decode energy to add up")
    if not j > 0:
        raise ConfigError(
            f"profile cell {c.cell_key} has a prefill + decode energy of {j:.3g} J per request, "
            "not a positive energy (see its failing audits)"
        )
    source = f"profile cell {c.cell_key} ({c.label}), prefill + decode per request"
    if c.result.get("audit_passed") is False:
        failed = [a.get("name") for a in c.result.get("audit") or [] if not a.get("passed")]
        source += f"; AUDITS FAILED: {', '.join(str(n) for n in failed) or 'see the report'}"
    return PerRequestEnergy(j / J_PER_WH, c.method, source)
