"""A busy neighbour on demand: a detached process spinning one core for a bounded time.

Ships with the package like the fake meters: the quiet-host tests use it, and a user can check
that ``--on-contention`` sees other work on their machine. The process is started through a shell
that exits at once, so it is *not* a descendant of the caller (a real neighbour, not our child);
it stops by itself after ``seconds``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any

SPIN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


def spin_neighbour(seconds: float, *, started_cpu_s: float = 0.05) -> Any:
    """Start the spinner; returns its ``psutil.Process`` once it has used ``started_cpu_s``."""
    import psutil

    out = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "$0" {seconds} >/dev/null 2>&1 & echo $!', SPIN],
        check=True,
        capture_output=True,
        text=True,
    )
    proc = psutil.Process(int(out.stdout.strip()))
    deadline = time.monotonic() + 5.0
    with contextlib.suppress(psutil.NoSuchProcess):
        while sum(proc.cpu_times()[:2]) < started_cpu_s and time.monotonic() < deadline:
            time.sleep(0.02)
    return proc


class CpuOf:
    """Cumulative CPU seconds of one process (its last value once it has exited)."""

    def __init__(self, proc: Any) -> None:
        self.proc, self.last = proc, 0.0

    def __call__(self) -> float:
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            self.last = float(sum(self.proc.cpu_times()[:2]))
        return self.last
