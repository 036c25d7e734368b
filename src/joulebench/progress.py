"""Progress events: what a running sweep or ``reproduce`` tells its caller, one dict per step.

Emitted by :func:`joulebench.profile.sweep.run_sweep` and
:func:`joulebench.profile.fanout.run_sweep_fanout` (``start``, then per cell ``skip``,
``cell_start``, ``done`` or ``failed``), and by :func:`joulebench.reproduce.run.run_reproduce`,
which relays its sweeps' events with their ``study`` and adds its own: ``study_start``,
``study_failed``, ``report_start``, the serving studies' per-run ``skip`` / ``cell_start`` /
``done`` / ``failed`` / ``note`` (:mod:`joulebench.reproduce.serving`) and a launched engine's
``engine_start``, ``engine_ready``, ``engine_stopped``. ``cli/sweep.py`` and ``cli/reproduce.py``
print them. Only ``event`` is always there; which other keys come depends on the event and its
emitter (a sweep's cell events carry ``cell`` and ``cell_key``, a serving run's carry ``label``).
Events are handed over in-process and never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from typing_extensions import Required, TypedDict

if TYPE_CHECKING:
    from joulebench.profile.config import ProfileConfig
    from joulebench.results.cell import CellResult

EventKind = Literal[
    "start",
    "skip",
    "cell_start",
    "done",
    "failed",
    "note",
    "study_start",
    "study_failed",
    "report_start",
    "engine_start",
    "engine_ready",
    "engine_stopped",
]


class ProgressEvent(TypedDict, total=False):
    """One progress event; ``event`` says which, the other keys are its emitter's."""

    event: Required[EventKind]
    # a sweep's run: ``start``
    run_id: str  # also a serving run's ``done`` / ``failed``: the stored load run
    total: int  # also ``study_start``: the study's cells or runs
    resumed: bool
    # a sweep's cell: ``skip``, ``cell_start``, ``done``, ``failed``
    cell: ProfileConfig
    cell_key: str
    result: CellResult
    elapsed_s: float
    error: str | None  # ``failed``, ``study_failed``; None in a serving run's ``done``
    # reproduce: the study (relayed sweep events too), a serving run, a note
    study: str
    label: str
    summary: dict[str, Any]  # the serving run's stored summary
    note: str
    # a launched engine: ``engine_start``, ``engine_ready``, ``engine_stopped``
    engine: str
    log: str
    url: str
    ready_s: float | None
    pid: int | None
    exit_code: int | None
    stopped_by: str | None


#: Where a run sends its events (a CLI's printer, a test's ``list.append``).
Emit = Callable[[ProgressEvent], None]
