"""The study's headline table: bundled as package data, validated when read."""

from __future__ import annotations

import pytest

from joulebench.analysis.paper import SERVING_STUDY, headlines, parse_headlines
from joulebench.errors import ConfigError


def test_bundled_headlines_are_the_serving_studys_per_request_figures() -> None:
    by_key = {h.key: h for h in headlines()}
    assert {k: h.value for k, h in by_key.items()} == {
        "naive_sequential": 1.2e-1,
        "tgi_burst": 9.6e-3,
        "tgi_fixed_500ms": 1.1e-3,
    }
    assert all(h.unit == "Wh/request" and h.citation == SERVING_STUDY for h in headlines())
    fixed = by_key["tgi_fixed_500ms"]
    assert fixed.interval_ms == 500.0 and (fixed.arrival_kind, fixed.scheduler) == (
        "fixed",
        "continuous",
    )
    assert "idle-floor audit" in fixed.caveat and "≈60 W × 0.5 s ≈ 30 J" in fixed.caveat
    assert [h.caveat for h in headlines()[:2]] == ["", ""]


def test_a_misspelt_key_is_refused_with_its_place() -> None:
    row = {
        "key": "k",
        "label": "l",
        "value": 1.0,
        "setting": "s",
        "arrival_kind": "fixed",
        "scheduler": "continuous",
        "intervall_ms": 500,
    }
    with pytest.raises(ConfigError, match=r"invalid headline table t\.yaml: 0\.intervall_ms"):
        parse_headlines([row], "t.yaml")


def test_a_missing_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"0\.value"):
        parse_headlines([{"key": "k", "label": "l", "setting": "s"}], "t.yaml")


def test_a_headline_in_another_unit_is_refused() -> None:
    """compare() puts every headline beside Wh/request figures: another unit would be misread."""
    row = {"key": "k", "label": "l", "value": 1.0, "setting": "s", "arrival_kind": "burst"}
    with pytest.raises(ConfigError, match="unit"):
        parse_headlines([{**row, "scheduler": "continuous", "unit": "J/request"}], "t.yaml")
