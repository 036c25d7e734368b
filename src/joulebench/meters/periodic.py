"""A function called every period on a daemon thread until stopped.

The one sampling loop behind the power timeline (:mod:`joulebench.meters.timeline`), NVML's
polled power (:mod:`joulebench.meters.nvml`) and the engine ``/metrics`` scraper
(:mod:`joulebench.load.engines.scrape`). Ticks keep to a fixed schedule (``start + k·period``),
so a slow tick does not stretch the period after it; a thread that fell behind (the process was
suspended) starts a new schedule instead of ticking in a burst to catch up. The edges are the
owner's: it takes its own first and closing samples on its own thread, before :meth:`start` and
after :meth:`stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Call ``tick()`` every ``period_s`` seconds between :meth:`start` and :meth:`stop`.

    ``tick`` returns ``False`` to end the loop by itself (a full timeline); an exception it
    raises is logged (with ``name``), handed to ``on_error`` (a caller that counts its
    failures) and the loop goes on: a sensor hiccup must not stop the sampling, nor kill the
    measured process.
    """

    def __init__(
        self,
        tick: Callable[[], object],
        period_s: float,
        *,
        name: str,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"{name}: the period must be positive, got {period_s} s")
        self.period_s = period_s
        self.name = name
        self._tick = tick
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """The loop runs (it ends at :meth:`stop`, or when a tick returned ``False``)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop ticking and wait up to ``timeout_s`` (``None``: as long as it takes) for the
        tick under way to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the loop to end by itself (a tick returned ``False``)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        next_t = time.monotonic() + self.period_s
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                if self._tick() is False:
                    return
            except Exception as exc:
                log.exception("%s: a tick failed; ticking on", self.name)
                if self._on_error is not None:
                    self._on_error(exc)
            next_t += self.period_s
            if next_t < time.monotonic():  # fell behind (suspended): do not burst to catch up
                next_t = time.monotonic() + self.period_s
