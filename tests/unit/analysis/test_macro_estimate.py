"""Macro estimate arithmetic, the bundled grid table, and input validation."""

from __future__ import annotations

import pytest

from joulebench.analysis.estimate import (
    DEFAULT_HOUSEHOLD_KWH_PER_YEAR,
    estimate,
    per_request_from_store,
)
from joulebench.analysis.grid_intensity import grid_intensity, grid_table
from joulebench.analysis.records import ProfileCell, StoreContents
from joulebench.errors import ConfigError, UnknownName


def test_study_example_naive_sequential() -> None:
    r = estimate(1.2e-1, 1_000_000)
    assert r.kwh_per_day == pytest.approx(120.0)
    assert r.kwh_per_year == pytest.approx(120.0 * 365)
    assert r.households == pytest.approx(120.0 * 365 / 4255)
    assert r.kg_co2e_per_day is None and r.grid is None
    assert r.method == "given"


def test_study_example_fixed_500ms() -> None:
    assert estimate(1.1e-3, 1_000_000).kwh_per_day == pytest.approx(1.1)


def test_default_household_is_french_average() -> None:
    assert DEFAULT_HOUSEHOLD_KWH_PER_YEAR == 4255.0
    r = estimate(1.0, 4255.0 / 365 * 1000, household_kwh_per_year=4255.0)
    assert r.households == pytest.approx(1.0)
    assert estimate(1.0, 1000, household_kwh_per_year=365.0).households == pytest.approx(1.0)


def test_co2_from_country_and_from_given_intensity() -> None:
    fr = grid_intensity("FR")
    r = estimate(1.2e-1, 1_000_000, country="fr")
    assert r.grid == fr
    assert r.kg_co2e_per_day == pytest.approx(120.0 * fr.g_co2e_per_kwh / 1000)
    given = estimate(1.2e-1, 1_000_000, grid_g_per_kwh=400.0)
    assert given.kg_co2e_per_day == pytest.approx(48.0)
    assert given.grid is not None and given.grid.source == "given by the user"


def test_iso3_codes_and_case() -> None:
    assert grid_intensity("deu") == grid_intensity("DE")
    assert grid_intensity(" us ").country == "United States"


def test_grid_table_rows_have_source_and_year() -> None:
    table = grid_table()
    assert len(table) >= 40
    for code, row in table.items():
        assert len(code) == 2 and code.isupper()
        assert 0 < row.g_co2e_per_kwh < 1500
        assert row.year is not None and 2015 <= row.year <= 2030
        assert "Ember" in row.source
    # a low-carbon grid and a coal-heavy one, as the source reports them
    assert table["FR"].g_co2e_per_kwh < 100 < table["PL"].g_co2e_per_kwh


def test_unknown_country_lists_known_codes() -> None:
    with pytest.raises(UnknownName) as info:
        estimate(0.1, 10, country="XX")
    assert "FR" in str(info.value) and "DE" in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"wh_per_request": -1.0, "requests_per_day": 10}, "--wh-per-request"),
        ({"wh_per_request": 0.0, "requests_per_day": 10}, "--wh-per-request"),
        ({"wh_per_request": 0.1, "requests_per_day": 0}, "--requests-per-day"),
        ({"wh_per_request": 0.1, "requests_per_day": 10, "household_kwh_per_year": -5}, "--household-kwh-per-year"),
        ({"wh_per_request": 0.1, "requests_per_day": 10, "grid_g_per_kwh": -1}, "--grid-g-per-kwh"),
        ({"wh_per_request": float("nan"), "requests_per_day": 10}, "--wh-per-request"),
    ],
)  # fmt: skip
def test_bad_input_names_the_flag(kwargs: dict, flag: str) -> None:
    wh = kwargs.pop("wh_per_request")
    n = kwargs.pop("requests_per_day")
    with pytest.raises(ConfigError, match=flag):
        estimate(wh, n, **kwargs)


def test_country_and_grid_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="either a country or a grid intensity"):
        estimate(0.1, 10, country="FR", grid_g_per_kwh=50)


def test_to_dict_carries_method_and_source() -> None:
    d = estimate(0.5, 100, country="SE", method="estimated", source="cell x").to_dict()
    assert d["method"] == "estimated" and d["source"] == "cell x"
    assert d["grid"]["code"] == "SE" and d["grid"]["year"]
    assert list(d["grid"]) == ["code", "country", "g_co2e_per_kwh", "year", "source"]
    assert d["kwh_per_day"] == pytest.approx(0.05)


def _cell(key: str, per_request_j: float) -> ProfileCell:
    return ProfileCell(
        run_id="r1",
        cell_key=key,
        study=None,
        status="done",
        config={"model": "tiny", "precision": "fp32", "batch_size": 1},
        result={
            "normalized": {"per_request_j": per_request_j},
            "meter_methods": {"cpu": "estimated"},
        },
        error=None,
    )


def test_exact_cell_key_wins_over_keys_it_prefixes() -> None:
    contents = StoreContents([], [_cell("c1", 36.0), _cell("c10", 72.0)], [], [], {})
    got = per_request_from_store(contents, cell="c1")
    assert got.wh_per_request == pytest.approx(0.01) and got.method == "estimated"
    assert per_request_from_store(contents, cell="c10").wh_per_request == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="more than one"):
        per_request_from_store(contents, cell="c")


def test_cell_with_failed_audits_or_non_positive_energy_says_so() -> None:
    bad = _cell("neg", -3.6)  # subtraction decode lost in noise: prefill + decode < 0
    with pytest.raises(ConfigError, match="not a positive energy"):
        per_request_from_store(StoreContents([], [bad], [], [], {}), cell="neg")
    flagged = _cell("f", 36.0)
    flagged.result["audit_passed"] = False
    flagged.result["audit"] = [{"name": "decode/subtraction:difference_resolved", "passed": False}]
    got = per_request_from_store(StoreContents([], [flagged], [], [], {}), cell="f")
    assert "AUDITS FAILED: decode/subtraction:difference_resolved" in got.source
    assert (
        "AUDITS"
        not in per_request_from_store(
            StoreContents([], [_cell("g", 36.0)], [], [], {}), cell="g"
        ).source
    )


def test_load_run_with_negative_net_accounting_is_refused_clearly() -> None:
    from joulebench.analysis.records import RunRecord

    run = RunRecord(
        "L1", "load", None, "done", None,
        meter={"methods": {"cpu:0": "estimated"}},
        summary={"energy": {"per_request_wh": {"idle_subtracted": -1e-4, "attributed_mean": 2e-4}}},
    )  # fmt: skip
    contents = StoreContents([run], [], [], [], {})
    with pytest.raises(ConfigError, match="not a positive energy"):
        per_request_from_store(contents, run="L1", accounting="idle_subtracted")
    got = per_request_from_store(contents, run="L1", accounting="attributed_mean")
    assert got.wh_per_request == pytest.approx(2e-4)
