"""Run a command inside an energy window: what ``joulebench measure -- CMD`` measures.

:func:`measure_command` takes the idle baseline (when asked), starts a power timeline, opens an
:class:`~joulebench.meters.window.EnergyWindow` around the child process and returns everything
measured. :func:`run_child` runs the command to completion: SIGINT / SIGTERM sent to us stop it
(forwarded, then terminate, then kill) and are reported, not raised, so a partial measurement
is still kept.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from joulebench.meters.base import Meter
from joulebench.meters.timeline import PowerTimeline
from joulebench.meters.window import EnergyWindow, IdleBaseline, WindowResult, measure_idle

FORWARD_AFTER_S = 0.5  # a terminal Ctrl-C already reached CMD: give it this long before forwarding
TERMINATE_AFTER_S = 5.0
KILL_AFTER_S = 2.0


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(slots=True)
class ChildRun:
    exit_code: int
    signum: int | None  # the signal that interrupted *us*, if any


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop_child(child: subprocess.Popen[bytes], signum: int) -> None:
    """Let CMD react to the signal it may already have; forward it; then terminate; then kill."""
    steps: list[tuple[float, Any]] = [
        (FORWARD_AFTER_S, lambda: child.send_signal(signum)),
        (TERMINATE_AFTER_S, child.terminate),
        (KILL_AFTER_S, child.kill),
    ]
    for wait_s, action in steps:
        try:
            child.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            try:
                action()
            except ProcessLookupError:
                return
    child.wait()


def run_child(cmd: list[str], *, stdout_to_stderr: bool) -> ChildRun:
    """Run CMD to completion; SIGINT/SIGTERM stop it and are reported, not raised."""
    pending: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)
        if child is not None and child.returncode is None:
            raise _Stop(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(cmd, stdout=sys.stderr if stdout_to_stderr else None)
        try:
            if pending:
                raise _Stop(pending[0])
            child.wait()
        except _Stop as stop:
            for s in previous:  # from here on, further signals must not interrupt the cleanup
                signal.signal(s, lambda signum, frame: pending.append(signum))
            _stop_child(child, stop.signum)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if child is not None and child.returncode is None:
            child.kill()
            child.wait()
    return ChildRun(_exit_code(child.returncode), pending[0] if pending else None)


@dataclass(slots=True)
class CommandRun:
    """What measuring one command gave: its window, how it ended, the idle baseline, the timeline."""

    result: WindowResult
    child: ChildRun
    idle: IdleBaseline | None
    timeline: PowerTimeline


def measure_command(
    meter: Meter, cmd: list[str], *, idle_s: float, hz: float, stdout_to_stderr: bool
) -> CommandRun:
    """Idle baseline (``idle_s`` > 0), then ``cmd`` inside an energy window with a timeline."""
    idle = measure_idle(meter, idle_s) if idle_s > 0 else None
    timeline = PowerTimeline(meter, hz=hz)
    timeline.start()
    window = EnergyWindow(meter, idle=idle)
    try:
        with window:
            child = run_child(cmd, stdout_to_stderr=stdout_to_stderr)
    finally:
        timeline.stop()
    return CommandRun(window.result, child, idle, timeline)
