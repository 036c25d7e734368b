"""``continuous``: transformers' continuous batching (``ContinuousBatchingManager``, paged KV cache).

Requests join and leave the running batch at every step. The cache is always sized explicitly
(``num_blocks`` × ``page_size`` tokens, ``max_batch_tokens`` per forward): left to itself,
transformers sizes it to 90 % of free memory, which on a CPU host means 90 % of RAM.

Steps are observed by wrapping the manager's ``_generation_step`` (the requests of the prepared
batch and how many query tokens each computes) and its wake-up event (the generation loop waits on
it only when it has nothing to do, which marks the worker idle). Both are private transformers
attributes; they are checked at start so a transformers release that moves them fails loudly
instead of serving without energy attribution. Decoding is greedy: the engine rejects sampling
parameters for this scheduler (transformers applies sampling to the whole batch, not per request).

The manager is watched. One request that breaks a forward step ends transformers' generation loop
for good, so when it dies :meth:`ContinuousScheduler.health` turns "unavailable", a new manager is
started, and every request in flight gets exactly one outcome: the request that broke it (the only
one in the failing step, or a suspect from an earlier failing step that fails again) gets the
error; requests that already streamed tokens are failed explicitly (their client has a partial
answer); the others are queued again. Suspects of a step with several requests are queued again
one at a time, so the next failure names one of them. The sink counts restarts, requeued and
failed-by-restart requests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from typing import Any

from joulebench.errors import ConfigError
from joulebench.extras import require
from joulebench.serve.request import FinishReason, GenRequest
from joulebench.serve.schedulers.base import Scheduler, Step, StepSink, register_scheduler

log = logging.getLogger(__name__)

#: Default KV-cache size in tokens when max_batch_size full contexts would be more (see __init__).
DEFAULT_CACHE_TOKENS = 32768
#: How long start() waits for the generation loop to build its batch processor.
START_TIMEOUT_S = 120.0


class _IdleEvent(threading.Event):
    """The manager's wake-up event: waiting on it means the loop has no request to run."""

    def __init__(self, sink: StepSink) -> None:
        super().__init__()
        self._sink = sink

    def wait(self, timeout: float | None = None) -> bool:
        self._sink.on_idle()
        return super().wait(timeout)


@register_scheduler
class ContinuousScheduler(Scheduler):
    name = "continuous"
    supports_sampling = False

    def __init__(
        self,
        *args: Any,
        context_length: int = 2048,
        page_size: int = 64,
        num_blocks: int | None = None,
        max_batch_tokens: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if page_size < 4:
            raise ConfigError(f"page_size must be ≥ 4 tokens, got {page_size}")
        # The KV cache holds max_batch_size full contexts, capped at DEFAULT_CACHE_TOKENS (but
        # always one full context): without a flash kernel transformers allocates an attention
        # mask of max_batch_tokens × (cache tokens + max_batch_tokens), and fills it at start.
        capacity_tokens = max(
            context_length, min(self.max_batch_size * context_length, DEFAULT_CACHE_TOKENS)
        )
        self.page_size = page_size
        self.num_blocks = num_blocks or max(4, math.ceil(capacity_tokens / page_size))
        self.max_batch_tokens = max_batch_tokens or max(256, min(1024, context_length))
        self.seed = seed
        self.options.update(
            page_size=self.page_size,
            num_blocks=self.num_blocks,
            max_batch_tokens=self.max_batch_tokens,
        )
        self._live: dict[str, GenRequest] = {}
        self._lock = threading.Lock()
        self._manager: Any = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        # crash recovery (see the module docstring); all guarded by _lock
        self._restarting: str | None = None  # why the manager is being replaced
        self._held: list[GenRequest] = []  # submitted while restarting
        self._failing_step: list[str] = []  # request ids of the step that raised
        self._suspects: set[str] = set()  # in a failing step with others
        self._probation: deque[GenRequest] = deque()  # suspects waiting to run one at a time
        self._on_probation: str | None = None
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._manager = self._launch()
        self._reader = threading.Thread(
            target=self._read_outputs, name="joulebench-cb-out", daemon=True
        )
        self._reader.start()

    def _launch(self) -> Any:
        """Build, hook and start a manager; return it once its batch processor is ready."""
        transformers = require("transformers", "hf", "continuous batching")
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        config = transformers.GenerationConfig(
            do_sample=False,
            max_new_tokens=16,
            eos_token_id=eos if eos is not None else -1,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        on_cuda = getattr(self.model.device, "type", "cpu") == "cuda"
        cb_config = transformers.ContinuousBatchingConfig(
            page_size=self.page_size,
            num_blocks=self.num_blocks,
            max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=self.max_batch_size,
            allow_block_sharing=False,
            use_async_batching=False,
            use_cuda_graph=None if on_cuda else False,
            auto_switch_to_flash=on_cuda,
            seed=self.seed,
        )
        manager = self.model.init_continuous_batching(
            generation_config=config, continuous_batching_config=cb_config
        )
        for attr in ("_generation_step", "_wake_up_loop", "batch_processor", "output_router"):
            if not hasattr(manager, attr):
                raise ConfigError(
                    f"this transformers version ({transformers.__version__}) has no "
                    f"ContinuousBatchingManager.{attr}; joulebench cannot attribute energy per "
                    "step with it: use --scheduler dynamic or a transformers release from 5.17 on"
                )
        manager._wake_up_loop = _IdleEvent(self.sink)
        original_step = manager._generation_step
        manager._generation_step = lambda: self._timed_step(manager, original_step)
        manager.start()
        self._wait_ready(manager)
        return manager

    def _wait_ready(self, manager: Any) -> None:
        """Block until the generation loop has built its batch processor (static tensors, cache):
        otherwise the first request would wait for it, and its latency would show it."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while getattr(manager, "batch_processor", None) is None:
            if not manager.is_running():
                error = manager.background_thread_status.fatal_error
                raise ConfigError(f"continuous batching did not start: {error}")
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"continuous batching was not ready after {START_TIMEOUT_S:.0f} s; lower "
                    "num_blocks or max_batch_tokens"
                )
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._manager is not None:
            try:
                self._manager.stop(block=True, timeout=timeout_s, hard_stop=True)
            except Exception:
                log.exception("continuous batching manager did not stop cleanly")
        if self._reader is not None:
            self._reader.join(timeout_s)
        with self._lock:
            left = list(self._live.values())
            self._live.clear()
            self._held.clear()
            self._probation.clear()
        for req in left:
            self.sink.on_finish(req, FinishReason.ERROR, "server is shutting down")

    # -- requests ----------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        if self._manager is None or self._stopping.is_set():
            self.sink.on_finish(req, FinishReason.ERROR, "server is shutting down")
            return
        with self._lock:
            self._live[req.id] = req
            if self._restarting is not None:  # the new manager takes it
                self._held.append(req)
                return
            manager = self._manager
        self._add(manager, req)

    def _add(self, manager: Any, req: GenRequest) -> None:
        added = manager.add_request(
            input_ids=list(req.prompt_ids),
            request_id=req.id,
            max_new_tokens=req.max_new_tokens,
            streaming=True,
            eos_token_id=sorted(req.eos_token_ids) or -1,
        )
        if added is None:
            with self._lock:
                if self._restarting is not None or not manager.is_running():
                    self._held.append(req)  # the manager is dying: the recovery re-queues it
                    return
                refused = self._live.pop(req.id, None) is not None
            if refused:
                self.sink.on_finish(
                    req, FinishReason.ERROR, "continuous batching manager refused it"
                )

    def cancel(self, req: GenRequest) -> None:
        """Free the request's slot and cache blocks now (the client went away or a stop matched)."""
        with self._lock:
            live = self._live.pop(req.id, None)
            manager = self._manager
        if live is None:
            return
        manager.cancel_request(req.id)
        self.sink.on_finish(req, req.cancel_reason)
        self._release_probation(req.id)

    def health(self) -> dict[str, Any]:
        manager = self._manager
        if manager is None or self._stopping.is_set():
            return {"status": "unavailable", "reason": "continuous batching is not running"}
        with self._lock:
            restarting, restarts = self._restarting, self.restarts
        if restarting is None and not manager.is_running():
            restarting = str(manager.background_thread_status.fatal_error)
        if restarting is not None:
            return {
                "status": "unavailable",
                "reason": f"the continuous batching manager stopped ({restarting}); restarting",
                "restarts": restarts,
            }
        return {"status": "ok", "reason": None, "restarts": restarts}

    def waiting(self) -> int:
        with self._lock:
            return sum(1 for r in self._live.values() if r.scheduled_s is None)

    # -- worker-thread hooks -----------------------------------------------------------------
    def _timed_step(self, manager: Any, original_step: Any) -> None:
        futures = list(manager.batch_processor.inputs_and_outputs.requests_in_batch)
        start = self.clock()
        try:
            original_step()
        except Exception:  # the loop dies of it: remember who was in this step
            with self._lock:
                self._failing_step = [str(fs.state.request_id) for fs in futures]
                self._restarting = "a forward step raised"
            raise
        end = self.clock()
        work: dict[GenRequest, int] = {}
        prefill = decode = 0
        with self._lock:
            for fs in futures:
                req = self._live.get(fs.state.request_id)
                if req is None:
                    continue
                if req.scheduled_s is None:
                    req.scheduled_s = start
                work[req] = int(fs.query_length)
                if fs.state.generated_tokens:
                    decode += int(fs.query_length)
                else:
                    prefill += int(fs.query_length)
        self.sink.on_step(
            Step(
                start,
                end,
                work,
                prefill_tokens=prefill,
                decode_tokens=decode,
                batch_size=len(futures),
            )
        )

    def _read_outputs(self) -> None:
        while not self._stopping.is_set():
            manager = self._manager
            try:
                out = manager.output_router.output_queue.get(timeout=0.1)
            except queue.Empty:
                if not manager.is_running() and not self._stopping.is_set():
                    self._recover(manager)
                continue
            with self._lock:
                dying = self._restarting is not None
            if dying and out.error is not None:
                continue  # the dying loop fails everyone in flight: _recover decides instead
            try:
                self._deliver(out)
            except Exception:
                log.exception("delivering continuous batching output %s failed", out.request_id)

    def _deliver(self, out: Any) -> None:
        with self._lock:
            req = self._live.get(out.request_id)
        if req is None:  # cancelled meanwhile
            return
        tokens = [int(t) for t in out.generated_tokens]
        new = tokens[len(req.generated) :]
        if new:
            req.generated.extend(new)
            self.sink.on_tokens(req, new)
        if not out.is_finished():
            return
        with self._lock:
            self._live.pop(out.request_id, None)
        if out.error is not None:
            self.sink.on_finish(req, FinishReason.ERROR, str(out.error))
        elif req.generated and req.generated[-1] in req.eos_token_ids:
            self.sink.on_finish(req, FinishReason.STOP)
        else:
            self.sink.on_finish(req, FinishReason.LENGTH)
        self._release_probation(req.id)

    # -- crash recovery (reader thread) ----------------------------------------------------------
    def _recover(self, dead: Any) -> None:
        """The generation loop died: start a new manager and give every live request an outcome."""
        error = dead.background_thread_status.fatal_error
        message = f"{type(error).__name__}: {error}" if error is not None else "it stopped"
        with self._lock:
            self._restarting = message
            failing = [i for i in self._failing_step if i in self._live]
            self._failing_step = []
            live = list(self._live.values())
            self._held.clear()
        log.error("continuous batching manager died (%s); restarting it", message)
        self._drain(dead)
        if getattr(dead, "batch_processor", None) is not None:  # not stopped yet (a retry)
            with contextlib.suppress(Exception):
                dead.stop(block=True, timeout=5.0, hard_stop=True)
        culprits = set(failing) if len(failing) == 1 else set(failing) & self._suspects
        try:
            manager = self._launch()
        except Exception as exc:  # nothing can run: every request gets an explicit error
            log.exception("continuous batching could not be restarted")
            with self._lock:
                self._restarting = f"{message}; the restart failed: {exc}"
                live = list(self._live.values())  # with those submitted meanwhile
                self._live.clear()
                self._held.clear()
                self._probation.clear()
                self._on_probation = None
            for req in live:
                self.sink.on_finish(req, FinishReason.ERROR, f"generation loop stopped: {message}")
            if live:
                self.sink.on_restart(requeued=0, failed=len(live))
            self._stopping.wait(1.0)  # the reader tries again (health stays unavailable)
            return
        fail: list[tuple[GenRequest, str]] = []
        requeue: list[GenRequest] = []
        with self._lock:
            self.restarts += 1
            waiting = {r.id for r in self._probation}
            for req in live:
                if req.id not in self._live:  # finished or cancelled meanwhile
                    continue
                if req.id in culprits:
                    fail.append((req, f"this request broke the generation step: {message}"))
                elif req.generated:
                    fail.append(
                        (
                            req,
                            f"the generation loop failed ({message}) after {len(req.generated)} "
                            "tokens of this request were sent; retry it",
                        )
                    )
                elif req.id in waiting:  # a suspect not run yet: it keeps its place
                    continue
                elif len(failing) > 1 and req.id in failing:
                    self._suspects.add(req.id)
                    self._probation.append(req)
                else:
                    requeue.append(req)
            for req, _ in fail:
                self._live.pop(req.id, None)
                self._suspects.discard(req.id)
            if self._on_probation is not None and self._on_probation not in self._live:
                self._on_probation = None
            probation = self._on_probation
            if probation is not None:  # it had not run yet: it goes first again
                self._probation.appendleft(self._live[probation])
                self._on_probation = None
            seen = {r.id for r in live}
            requeue += [r for r in self._held if r.id in self._live and r.id not in seen]
            self._held.clear()
            self._manager = manager
            self._restarting = None
            requeued = len(requeue) + sum(1 for r in self._probation if r.id in self._live)
        for req, why in fail:
            self.sink.on_finish(req, FinishReason.ERROR, why)
        self.sink.on_restart(requeued=requeued, failed=len(fail))
        for req in requeue:
            self._add(manager, req)
        self._release_probation(None)

    def _drain(self, dead: Any) -> None:
        """Deliver what the dead loop finished before it died (its error outputs are dropped)."""
        while True:
            try:
                out = dead.output_router.output_queue.get_nowait()
            except queue.Empty:
                return
            if out.error is None:
                try:
                    self._deliver(out)
                except Exception:
                    log.exception("delivering continuous batching output %s failed", out.request_id)

    def _release_probation(self, finished_id: str | None) -> None:
        """Run the next suspect once the one on probation (``finished_id``) is done."""
        with self._lock:
            if finished_id is not None:
                self._suspects.discard(finished_id)
                if finished_id != self._on_probation:
                    return
                self._on_probation = None
            if self._on_probation is not None or self._restarting is not None:
                return
            nxt = None
            while self._probation:
                cand = self._probation.popleft()
                if cand.id in self._live:
                    nxt = cand
                    break
            if nxt is None:
                return
            self._on_probation = nxt.id
            manager = self._manager
        self._add(manager, nxt)
