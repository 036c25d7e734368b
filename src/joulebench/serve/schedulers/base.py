"""The scheduler interface and its registry.

A scheduler owns the model on one worker thread. The serving engine hands it requests with
:meth:`Scheduler.submit` (thread-safe, never blocks) and receives, through a :class:`StepSink`,
every forward step (for energy attribution and metrics), every new token and every finish.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from joulebench.errors import UnknownName, at_least
from joulebench.serve.request import FinishReason, GenRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    """One timed forward step: its start and end, the tokens it computed for each request
    (``work``, what its energy is split by), and the batch's token counts and size."""

    start_s: float
    end_s: float
    work: Mapping[GenRequest, int]
    prefill_tokens: int
    decode_tokens: int
    batch_size: int


class StepSink(Protocol):
    """What a scheduler reports to (implemented by the serving engine)."""

    def on_step(self, step: Step) -> None: ...

    def on_idle(self) -> None: ...

    def on_tokens(self, req: GenRequest, token_ids: list[int]) -> None: ...

    def on_finish(
        self, req: GenRequest, reason: FinishReason, error: str | None = None
    ) -> None: ...

    def on_restart(self, *, requeued: int, failed: int) -> None:
        """The scheduler's worker died and was restarted; ``requeued`` requests in flight were
        queued again and ``failed`` were failed with an error."""


class Scheduler(ABC):
    """Runs generation requests on a model; see the module docstring."""

    name: ClassVar[str]
    #: False: the scheduler decodes greedily only and the engine rejects sampling parameters.
    supports_sampling: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sink: StepSink,
        *,
        max_batch_size: int = 16,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        at_least(max_batch_size, 1, "max_batch_size", error=ValueError)
        self.model = model
        self.tokenizer = tokenizer
        self.sink = sink
        self.max_batch_size = max_batch_size
        self.clock = clock
        self.options = options

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def submit(self, req: GenRequest) -> None:
        """Queue ``req`` (thread-safe, non-blocking)."""

    @abstractmethod
    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish or cancel what is in flight and join the worker."""

    @abstractmethod
    def waiting(self) -> int:
        """Requests submitted but not yet scheduled on the model."""

    def cancel(self, req: GenRequest) -> None:  # noqa: B027  (optional hook)
        """``req``'s cancel flag is set; threaded schedulers see it at their next step."""

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "unavailable", "reason": str | None, ...}`` (thread-safe)."""
        return {"status": "ok", "reason": None}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_batch_size": self.max_batch_size, **self.options}


class ThreadedScheduler(Scheduler):
    """Base for schedulers with their own worker thread fed from a queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"scheduler {self.name} already started")
        self._thread = threading.Thread(
            target=self._run, name=f"joulebench-{self.name}", daemon=True
        )
        self._thread.start()

    def submit(self, req: GenRequest) -> None:
        if self._stopping.is_set():
            self.sink.on_finish(req, FinishReason.ERROR, "server is shutting down")
            return
        self._queue.put(req)

    def waiting(self) -> int:
        return self._queue.qsize()

    def health(self) -> dict[str, Any]:
        if self._thread is None or not self._thread.is_alive():
            return {"status": "unavailable", "reason": f"the {self.name} worker is not running"}
        return {"status": "ok", "reason": None}

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("scheduler %s worker did not stop within %.1f s", self.name, timeout_s)
        while True:  # whatever never ran is failed, not dropped
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            if req is not None:
                self.sink.on_finish(req, FinishReason.ERROR, "server is shutting down")

    def _next(self, timeout_s: float | None = None) -> GenRequest | None:
        """Next queued request; marks the worker idle before it blocks."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        if timeout_s is None:
            self.sink.on_idle()
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _run(self) -> None:
        while not self._stopping.is_set():
            req = self._next()
            if req is None:
                continue
            batch = [req, *self._collect(req)]
            live = [r for r in batch if not self._drop_cancelled(r)]
            if not live:
                continue
            try:
                self._run_batch(live)
            except Exception as exc:  # one failing batch must not kill the worker
                log.exception("scheduler %s: batch of %d failed", self.name, len(live))
                for r in live:
                    if not r.finished:
                        self.sink.on_finish(r, FinishReason.ERROR, f"{type(exc).__name__}: {exc}")

    def _drop_cancelled(self, req: GenRequest) -> bool:
        if req.cancelled:
            self.sink.on_finish(req, req.cancel_reason)
            return True
        return False

    def _collect(self, first: GenRequest) -> list[GenRequest]:
        """More requests to run together with ``first`` (none by default)."""
        return []

    @abstractmethod
    def _run_batch(self, batch: list[GenRequest]) -> None: ...


SCHEDULERS: dict[str, type[Scheduler]] = {}


def register_scheduler(cls: type[Scheduler]) -> type[Scheduler]:
    SCHEDULERS[cls.name] = cls
    return cls


def make_scheduler(
    name: str, model: Any, tokenizer: Any, sink: StepSink, **kwargs: Any
) -> Scheduler:
    """Build the scheduler registered as ``name``; unknown names list the known ones."""
    import joulebench.serve.schedulers  # noqa: F401  (registers the built-in schedulers)

    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise UnknownName("scheduler", name, list(SCHEDULERS)) from None
    return cls(model, tokenizer, sink, **kwargs)
