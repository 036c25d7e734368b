"""The serving engine: admission, validation, the scheduler, the energy ledger and the metrics.

HTTP routes talk only to :class:`ServingEngine`: :meth:`ServingEngine.submit` validates a
tokenized request, admits it (or raises :class:`Rejected` with the HTTP status and reason) and
returns a :class:`RequestHandle` whose events arrive on the caller's asyncio loop. The engine is
the scheduler's :class:`~joulebench.serve.schedulers.base.StepSink`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joulebench.errors import at_least
from joulebench.exposition import Exposition
from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.gpus import model_devices, require_gpu_domain
from joulebench.meters.timeline import PowerTimeline
from joulebench.meters.window import measure_idle
from joulebench.serve.energy import EnergyLedger
from joulebench.serve.metrics import ServerMetrics, ServerReading
from joulebench.serve.request import (
    Event,
    FinishEvent,
    FinishReason,
    GenRequest,
    SamplingParams,
    TokenEvent,
    loop_sink,
    new_request_id,
)
from joulebench.serve.schedulers.base import Step, make_scheduler

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)


class Rejected(Exception):
    """A request refused before it ran; carries the HTTP status, the reason and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.param = param  # the request parameter at fault (OpenAI's error.param)
        self.code = code  # a machine-readable code (OpenAI's error.code), or None


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_queue: int = 256
    max_batch_size: int = 16
    default_max_tokens: int = 64
    max_tokens_limit: int | None = None  # None: the context length
    idle_s: float = 0.0  # idle baseline before serving (0: net energy not reported)
    timeline_hz: float = 20.0


class RequestHandle:
    """The asyncio side of one request: its events, its cancellation, its final event."""

    def __init__(self, engine: ServingEngine, req: GenRequest, queue: asyncio.Queue[Event]):
        self.engine = engine
        self.req = req
        self._queue = queue
        self.final: FinishEvent | None = None

    @property
    def id(self) -> str:
        return self.req.id

    async def events(self) -> AsyncIterator[Event]:
        while self.final is None:
            event = await self._queue.get()
            if isinstance(event, FinishEvent):
                self.final = event
            yield event

    async def next_event(self, timeout_s: float) -> Event | None:
        """The next event, or None after ``timeout_s`` (safe to call again: nothing is lost)."""
        if self.final is not None:
            raise RuntimeError(f"request {self.id} already finished")
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout_s)
        except asyncio.TimeoutError:
            return None
        if isinstance(event, FinishEvent):
            self.final = event
        return event

    async def wait(self) -> FinishEvent:
        async for _ in self.events():
            pass
        assert self.final is not None  # events() only returns after the finish event
        return self.final

    def cancel(self, reason: FinishReason = FinishReason.CANCELLED) -> None:
        if not self.req.finished:
            self.req.cancel(reason)
            self.engine.scheduler.cancel(self.req)

    @property
    def queue_ms(self) -> float | None:
        s = self.req.scheduled_s
        return None if s is None else max(0.0, (s - self.req.arrival_s) * 1000.0)


class ServingEngine:
    """Owns a loaded model's scheduler, the power timeline and per-response energy."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        context_length: int,
        scheduler: str = "continuous",
        meter: Meter,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        scheduler_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        at_least(self.config.max_queue, 1, "max_queue", error=ValueError)
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.context_length = int(context_length)
        self.meter = meter = require_gpu_domain(meter, model_devices(model))
        self.meter_info = MeterInfo.of(meter)
        self.clock = clock
        self.metrics = ServerMetrics()
        self.exposition = Exposition(self._metric_families)
        self.timeline = PowerTimeline(meter, hz=self.config.timeline_hz)
        self.ledger = EnergyLedger(self.timeline, self.meter_info)
        self.eos_token_ids = _eos_ids(model, tokenizer)
        options = dict(scheduler_options or {})
        if scheduler == "continuous":
            options.setdefault("context_length", self.context_length)
        self.scheduler = make_scheduler(
            scheduler,
            model,
            tokenizer,
            self,
            max_batch_size=self.config.max_batch_size,
            clock=clock,
            **options,
        )
        self._lock = threading.Lock()
        self._outstanding = 0
        self._endpoints: dict[GenRequest, str] = {}
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.config.idle_s > 0:
            idle = measure_idle(self.meter, self.config.idle_s)
            self.ledger.idle_power_w = idle.total_power_w
            log.info("idle baseline: %.2f W over %.2f s", idle.total_power_w, idle.duration_s)
        self.timeline.start()
        self.scheduler.start()
        self.started = True

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self.scheduler.stop()
        self.timeline.stop()

    @property
    def max_tokens_limit(self) -> int:
        return self.config.max_tokens_limit or self.context_length

    # -- admission ---------------------------------------------------------------------------
    def validate(
        self, prompt_ids: list[int], max_tokens: int | None, sampling: SamplingParams
    ) -> int:
        """Return the max new tokens to use, or raise :class:`Rejected` (400) naming the parameter.

        Cheap (one pass over the ids): token ids in the vocabulary, lengths against the context.
        """
        if not prompt_ids:
            raise Rejected(400, "the prompt is empty after tokenization", param="prompt")
        vocab = self.vocab_size
        if min(prompt_ids) < 0 or max(prompt_ids) >= vocab:
            at, bad = next((i, t) for i, t in enumerate(prompt_ids) if not 0 <= t < vocab)
            raise Rejected(
                400,
                f"token id {bad} at position {at} is outside the vocabulary [0, {vocab})",
                param="prompt",
            )
        if not sampling.is_default and not self.scheduler.supports_sampling:
            raise Rejected(
                400,
                f"the '{self.scheduler.name}' scheduler decodes greedily: temperature > 0, top_p < 1 "
                "and seed are not supported; omit them or run with --scheduler dynamic or sequential",
                param="temperature",
            )
        if max_tokens is not None and max_tokens < 1:
            raise Rejected(400, f"max_tokens must be ≥ 1, got {max_tokens}", param="max_tokens")
        if max_tokens is not None and max_tokens > self.max_tokens_limit:
            raise Rejected(
                400,
                f"max_tokens={max_tokens} is over this server's limit of {self.max_tokens_limit}",
                param="max_tokens",
            )
        n_prompt = len(prompt_ids)
        if n_prompt >= self.context_length:
            raise Rejected(
                400,
                f"the prompt has {n_prompt} tokens; model '{self.model_name}' has a context of "
                f"{self.context_length} tokens (prompt + max_tokens must fit)",
                param="prompt",
                code="context_length_exceeded",
            )
        room = self.context_length - n_prompt
        if max_tokens is None:
            return min(self.config.default_max_tokens, room)
        if max_tokens > room:
            raise Rejected(
                400,
                f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                f"{self.context_length} tokens; ask for at most {room} new tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return max_tokens

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding (what a token id indexes), cached after the first call."""
        cached = getattr(self, "_vocab_size", None)
        if cached is None:
            embeddings = self.model.get_input_embeddings()
            cached = int(getattr(embeddings, "num_embeddings", 0) or self.model.config.vocab_size)
            self._vocab_size = cached
        return cached

    def submit(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int | None,
        sampling: SamplingParams,
        endpoint: str,
        arrival_s: float | None = None,
    ) -> RequestHandle:
        """Validate, admit and queue a request (call from the event loop)."""
        arrival = self.clock() if arrival_s is None else arrival_s
        max_new = self.validate(prompt_ids, max_tokens, sampling)
        waiting = self.scheduler.waiting()
        if waiting >= self.config.max_queue:
            self.metrics.on_reject("queue_full")
            raise Rejected(
                429,
                f"the queue is full ({waiting} requests waiting, limit {self.config.max_queue}); "
                "retry later",
                {"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        req = GenRequest(
            id=new_request_id(),
            prompt_ids=list(prompt_ids),
            max_new_tokens=max_new,
            sampling=sampling,
            arrival_s=arrival,
            sink=loop_sink(loop, queue),
            eos_token_ids=frozenset() if sampling.ignore_eos else self.eos_token_ids,
        )
        with self._lock:
            self._outstanding += 1
            self._endpoints[req] = endpoint
        self.ledger.open(req)
        self.scheduler.submit(req)
        return RequestHandle(self, req, queue)

    # -- StepSink (worker threads) -------------------------------------------------------------
    def on_step(self, step: Step) -> None:
        self.ledger.record_step(step.start_s, step.end_s, step.work)
        self.metrics.on_step(step.batch_size, step.prefill_tokens, step.decode_tokens)

    def on_idle(self) -> None:
        self.ledger.mark_idle()
        self.metrics.on_idle()

    def on_tokens(self, req: GenRequest, token_ids: list[int]) -> None:
        req.emit(TokenEvent(tuple(token_ids)))

    def on_finish(self, req: GenRequest, reason: FinishReason, error: str | None = None) -> None:
        with self._lock:
            if req.finished:
                return
            req.finished = True
            self._outstanding -= 1
            endpoint = self._endpoints.pop(req, "unknown")
        energy = self.ledger.finish(req)
        queue_s = None if req.scheduled_s is None else max(0.0, req.scheduled_s - req.arrival_s)
        self.metrics.on_finish(endpoint, str(reason), queue_s)
        if error:
            log.warning("request %s failed: %s", req.id, error)
        req.emit(FinishEvent(reason, energy.to_dict(), error))

    def on_restart(self, *, requeued: int, failed: int) -> None:
        self.metrics.on_restart(requeued=requeued, failed=failed)
        log.warning(
            "scheduler %s restarted: %d requests queued again, %d failed",
            self.scheduler.name,
            requeued,
            failed,
        )

    # -- introspection -----------------------------------------------------------------------
    def render_metrics(self) -> str:
        """A Prometheus scrape of this engine (its own registry, see :mod:`joulebench.exposition`)."""
        return self.exposition.render()

    def _metric_families(self) -> list[Metric]:
        reading = self.meter.read()
        waiting = self.scheduler.waiting()
        with self._lock:
            running = max(0, self._outstanding - waiting)
        return self.metrics.families(
            ServerReading(
                model=self.model_name,
                scheduler=self.scheduler.name,
                queue_length=waiting,
                running=running,
                energy_j=reading.energy_j,
                methods=self.meter_info.methods,
                attributed_j=self.ledger.attributed_j,
                busy_s=self.ledger.busy_duration_s(),
                busy_spans=self.ledger.busy_span_count(),
            )
        )

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "unavailable", "reason": str | None, "scheduler", "in_flight",
        ...}``: unavailable while the engine is stopped or its scheduler cannot run requests
        (e.g. the continuous batching manager died and is being restarted)."""
        if self.started:
            state = self.scheduler.health()
        else:
            state = {"status": "unavailable", "reason": "the engine is not started"}
        return {**state, "scheduler": self.scheduler.name, "in_flight": self.outstanding}

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "context_length": self.context_length,
            "scheduler": self.scheduler.describe(),
            "meter": self.meter_info.to_dict(),
            "max_queue": self.config.max_queue,
            "max_tokens_limit": self.max_tokens_limit,
        }


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)
