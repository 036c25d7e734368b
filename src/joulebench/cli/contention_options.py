"""``--on-contention`` and its parameters, shared by ``profile`` and ``sweep``.

Each option defaults to ``None`` ("not given"): ``profile`` then uses the config defaults, and
``sweep`` keeps the sweep file's value. :meth:`ContentionFlags.settings` gives the given ones as
:class:`~joulebench.profile.config.MeasurementSettings` fields.

Decorate a command with :func:`contention_flags` and give it one
``contention: ContentionFlags`` parameter: the decorator puts the five options in its place and
hands the command what was given; ``contention.settings()`` checks and returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any

from joulebench.cli.common import flag_group, panel_option
from joulebench.meters.host import CONTENTION_MODES

_option = panel_option("Other processes on the host")


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


@dataclass(frozen=True, slots=True)
class ContentionFlags:
    """The contention options as given on the command line (``None``: not given). Each field is
    named as its config field and annotated with its flag: :func:`contention_flags` hands typer
    these, so the group is listed once."""

    on_contention: OnContentionOpt = None
    quiet_cores: QuietCoresOpt = None
    quiet_s: QuietSOpt = None
    contention_max_reruns: MaxRerunsOpt = None
    contention_max_wait_s: MaxWaitOpt = None

    def settings(self) -> dict[str, Any]:
        """The given options as config fields; an unknown mode is an error naming the known ones."""
        if self.on_contention is not None and self.on_contention not in CONTENTION_MODES:
            from joulebench.errors import UnknownName

            raise UnknownName("--on-contention mode", self.on_contention, list(CONTENTION_MODES))
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in given.items() if v is not None}


NO_CONTENTION_FLAGS = ContentionFlags()
"""The default of a ``contention: ContentionFlags`` parameter (:func:`contention_flags`
replaces it)."""


contention_flags = flag_group(ContentionFlags, "contention")
"""Give a command the contention options in place of its ``contention`` parameter."""
