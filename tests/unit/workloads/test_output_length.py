from __future__ import annotations

import pytest

from joulebench.errors import ConfigError
from joulebench.workloads.output_length import DEFAULT_NATURAL_CAP, OutputLength
from joulebench.workloads.prompt_set import EncodedPrompt

PROMPT = EncodedPrompt("p1", [1, 2, 3], 42)
NO_REF = EncodedPrompt("p2", [1, 2, 3], None)


def test_reference_forces_each_prompts_length() -> None:
    ol = OutputLength.parse("reference")
    assert ol.max_new_tokens(PROMPT) == ol.min_new_tokens(PROMPT) == 42
    with pytest.raises(ConfigError, match="p2"):
        ol.max_new_tokens(NO_REF)


def test_fixed_forces_n() -> None:
    for spec in ("128", 128):
        ol = OutputLength.parse(spec)
        assert ol.kind == "fixed" and ol.fixed == 128
        assert ol.max_new_tokens(NO_REF) == ol.min_new_tokens(NO_REF) == 128
    assert str(OutputLength.parse("7")) == "7"


def test_natural_stops_at_eos_with_a_cap() -> None:
    ol = OutputLength.parse("natural")
    assert ol.min_new_tokens(PROMPT) == 0 and ol.max_new_tokens(PROMPT) == DEFAULT_NATURAL_CAP
    capped = OutputLength.parse("natural:64")
    assert capped.max_new_tokens(PROMPT) == 64 and str(capped) == "natural:64"
    assert capped.to_dict() == {"kind": "natural", "fixed": None, "natural_cap": 64}


@pytest.mark.parametrize("bad", ["0", "-3", "lots", "natural:0", "natural:x", 0, True])
def test_bad_policies_are_rejected(bad) -> None:
    with pytest.raises(ConfigError):
        OutputLength.parse(bad)
