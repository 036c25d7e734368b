from __future__ import annotations

import json

from joulebench.cli.common import json_safe, print_json


def test_print_json_turns_non_finite_numbers_into_null(capsys) -> None:
    print_json({"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}], "d": (2, "x")})
    out = json.loads(capsys.readouterr().out)
    assert out == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, "x"]}


def test_json_safe_keeps_finite_values_and_other_types() -> None:
    assert json_safe({"n": 0.0, "i": 3, "s": "nan", "t": True, "none": None}) == {
        "n": 0.0, "i": 3, "s": "nan", "t": True, "none": None,
    }  # fmt: skip
