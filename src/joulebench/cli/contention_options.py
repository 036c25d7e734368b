"""``--on-contention`` and its parameters, shared by ``profile`` and ``sweep``.

Each option defaults to ``None`` ("not given"): ``profile`` then uses the config defaults, and
``sweep`` keeps the sweep file's value. :func:`contention_settings` gives the given ones as
:class:`~joulebench.profile.config.MeasurementSettings` fields.

Decorate a command with :func:`contention_flags` and give it one
``contention: ContentionFlags`` parameter: the decorator puts the five options in its place and
hands the command what was given; ``contention.settings()`` checks and returns them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from joulebench.cli.common import expand_parameter
from joulebench.meters.host import CONTENTION_MODES

_PANEL = "Other processes on the host"


def _option(*flags: str, **kwargs: Any) -> Any:
    return typer.Option(*flags, rich_help_panel=_PANEL, **kwargs)


OnContentionOpt = Annotated[
    str | None,
    _option(
        "--on-contention",
        help="a window beside busy processes: flag (record it, quiet_host audit fails; default), "
        "wait (until the host is quiet, then re-run the window) or fail (abort the cell)",
    ),
]
QuietCoresOpt = Annotated[
    float | None,
    _option(
        "--quiet-cores",
        min=0.0,
        help="cores other processes may use on average per window (default 0.05: 5 % of one)",
    ),
]
QuietSOpt = Annotated[
    float | None,
    _option("--quiet-s", min=0.0, help="wait: seconds the host must stay quiet (default 3)"),
]
MaxRerunsOpt = Annotated[
    int | None,
    _option("--contention-max-reruns", min=0, help="wait: re-runs of busy windows (default 3)"),
]
MaxWaitOpt = Annotated[
    float | None,
    _option(
        "--contention-max-wait-s", min=0.0, help="wait: total seconds of waiting (default 120)"
    ),
]


def contention_settings(
    on_contention: str | None,
    quiet_cores: float | None,
    quiet_s: float | None,
    max_reruns: int | None,
    max_wait_s: float | None,
) -> dict[str, Any]:
    """The given options as config fields; an unknown mode is an error naming the known ones."""
    if on_contention is not None and on_contention not in CONTENTION_MODES:
        from joulebench.errors import UnknownName

        raise UnknownName("--on-contention mode", on_contention, list(CONTENTION_MODES))
    given = {
        "on_contention": on_contention,
        "quiet_cores": quiet_cores,
        "quiet_s": quiet_s,
        "contention_max_reruns": max_reruns,
        "contention_max_wait_s": max_wait_s,
    }
    return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True, slots=True)
class ContentionFlags:
    """The contention options as given on the command line (``None``: not given)."""

    on_contention: str | None = None
    quiet_cores: float | None = None
    quiet_s: float | None = None
    contention_max_reruns: int | None = None
    contention_max_wait_s: float | None = None

    def settings(self) -> dict[str, Any]:
        """The given options as config fields (:func:`contention_settings`)."""
        return contention_settings(
            self.on_contention,
            self.quiet_cores,
            self.quiet_s,
            self.contention_max_reruns,
            self.contention_max_wait_s,
        )


NO_CONTENTION_FLAGS = ContentionFlags()
"""The default of a ``contention: ContentionFlags`` parameter (:func:`contention_flags`
replaces it)."""

_FLAGS: tuple[tuple[str, Any], ...] = (
    ("on_contention", OnContentionOpt),
    ("quiet_cores", QuietCoresOpt),
    ("quiet_s", QuietSOpt),
    ("contention_max_reruns", MaxRerunsOpt),
    ("contention_max_wait_s", MaxWaitOpt),
)


def contention_flags(command: Callable[..., Any]) -> Any:
    """Give ``command`` the contention options in place of its ``contention`` parameter."""
    flags = [(n, a, None) for n, a in _FLAGS]
    signature = expand_parameter(command, "contention", flags, "contention flags")

    @functools.wraps(command)
    def wrapper(*args: Any, **kw: Any) -> Any:
        given = ContentionFlags(**{n: kw.pop(n, None) for n, _ in _FLAGS})
        return command(*args, contention=given, **kw)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper
