"""One reading of pydantic validation errors, named the way the user wrote the input."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from joulebench.validation import problems, validation_message


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(1, ge=1)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = 1.0
    inner: Inner = Inner()
    tag: str = "x"

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if v == "bad":
            raise ValueError("tag 'bad' is reserved; pick another")
        return v


def _error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return info.value


def test_problems_read_location_kind_and_our_validator_text() -> None:
    found = problems(_error({"inner": {"n": 0}, "tag": "bad"}))
    assert [p.path for p in found] == ["inner.n", "tag"]
    assert found[0].kind == "greater_than_equal" and not found[0].type_mismatch
    assert found[1].msg.startswith("Value error, ")
    assert found[1].what == "tag 'bad' is reserved; pick another"
    assert problems(_error({"tag": 3}))[0].type_mismatch  # string_type


def test_message_names_each_location_as_the_user_wrote_it() -> None:
    exc = _error({"rate": "fast", "inner": {"n": 0}})
    flags = validation_message(exc, "invalid input", name={"rate": "--rate"}, show_input=True)
    assert flags == (
        "invalid input: --rate: Input should be a valid number, unable to parse string as a "
        "number (got 'fast'); inner.n: Input should be greater than or equal to 1 (got 0)"
    )
    keys = validation_message(exc, "f.yaml: bad", name=lambda p: f"key '{p}'", one_per_line=True)
    assert keys.splitlines()[0] == "f.yaml: bad"
    assert keys.splitlines()[2] == "  key 'inner.n': Input should be greater than or equal to 1"


def test_unknown_keys_list_the_known_ones_at_their_level() -> None:
    exc = _error({"inner": {"m": 2}, "colour": "red"})
    known = {(): ["rate", "inner", "tag"], ("inner",): ["n"]}
    text = validation_message(exc, "bad", known_keys=lambda loc: known[tuple(loc)])
    assert "inner.m: unknown key; known keys: n" in text
    assert "colour: unknown key; known keys: rate, inner, tag" in text
    assert validation_message(exc, "bad").endswith("colour: unknown key")


def test_an_input_that_is_not_a_mapping_is_named_by_top() -> None:
    exc = _error(["not", "a", "mapping"])
    assert validation_message(exc, "invalid options", top="options").startswith(
        "invalid options: options: Input should be a valid dictionary"
    )
