"""Units read from user text, in one place: durations (``500ms``, ``0.5s``, ``250us``).

Every duration joulebench accepts goes through :func:`parse_duration_s`, so an arrival process
(``fixed:500ms``), a shaping policy (``cadence:500ms``) and an SLO budget (``slo:500ms``) read
the same text the same way. A bare number is milliseconds, the unit joulebench prints specs in
(``fixed:500`` = ``fixed:500ms``), and the study's spacings (50, 300, 500 ms) are written in.
"""

from __future__ import annotations

import math
import re

from joulebench.errors import ConfigError

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)?\s*$")
_UNIT_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_duration_s(text: str, *, what: str, allow_zero: bool = False) -> float:
    """``"500ms"``, ``"0.5s"``, ``"250us"``, ``"500"`` (milliseconds) → seconds.

    The result is positive (or zero with ``allow_zero``) and finite; anything else is a
    :class:`ConfigError` naming ``what`` and showing how to write it.
    """
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(
            f"{what}: cannot read duration {text!r}; write a number with a unit, e.g. 500ms or "
            "0.5s (a bare number is milliseconds)"
        )
    value = float(m.group(1)) * _UNIT_S[m.group(2) or "ms"]
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "positive"
        raise ConfigError(f"{what}: duration must be {bound} and finite, got {text!r}")
    return value
