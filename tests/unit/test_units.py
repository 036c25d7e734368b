from __future__ import annotations

import pytest

from joulebench.errors import ConfigError
from joulebench.units import parse_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("0.5s", 0.5), ("250us", 250e-6), ("1e3ms", 1.0), ("750", 0.75), (" 2 s ", 2)],
)
def test_durations(text, seconds):
    assert parse_duration_s(text, what="x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["ms", "-5ms", "5 minutes", "", "1e999s", "nan"])
def test_bad_durations_say_how_to_fix(text):
    with pytest.raises(ConfigError, match="fixed interval"):
        parse_duration_s(text, what="fixed interval")


def test_zero_only_where_allowed():
    with pytest.raises(ConfigError, match="positive"):
        parse_duration_s("0ms", what="x")
    assert parse_duration_s("0ms", what="x", allow_zero=True) == 0.0
