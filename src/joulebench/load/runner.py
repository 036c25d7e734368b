"""Run a load test: send prompts on a precomputed schedule, stream answers, account energy.

The intended send times come from the arrival process before the first request leaves; a
dispatcher sends every request whose time has come (so lag, actual − intended, is measured, not
hidden), optionally bounded by a concurrency cap (a request waiting for a free slot is late, and
its lag says so). ``sequential`` is a closed loop. Failed and timed-out requests are kept, counted
and reported apart; latency percentiles cover successful requests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import httpx

from joulebench.errors import ConfigError, at_least
from joulebench.load.accounting import account
from joulebench.load.arrivals import ArrivalProcess, parse_arrival
from joulebench.load.clients import PromptInput, ProtocolClient, Tokenizer, make_client
from joulebench.load.metrics import FAILED, TIMEOUT, TRUNCATED, RequestRecord, latency_summary
from joulebench.load.pool import LoadClient
from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.timeline import PowerTimeline
from joulebench.results.load_summary import AuditVerdicts, LoadSummary

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

START_DELAY_S = 0.02  # schedule starts this long after setup, so request 0 is not born late


@dataclass(slots=True)
class LoadResult:
    """Everything a load test measured; :meth:`to_json` is the machine-readable summary."""

    config: dict[str, Any]
    records: list[RequestRecord]
    start_s: float
    end_s: float
    target_rate_rps: float | None
    energy: dict[str, Any]
    meter: MeterInfo | None = None
    timeline: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.ok]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def achieved_rate_rps(self) -> float | None:
        """Sends per second over the send span (what the generator achieved, not the server)."""
        sends = sorted(r.actual_send_s for r in self.records if r.actual_send_s is not None)
        if len(sends) < 2 or sends[-1] <= sends[0]:
            return None
        return (len(sends) - 1) / (sends[-1] - sends[0])

    @property
    def throughput_rps(self) -> float | None:
        """Successful completions per second over the whole test."""
        return len(self.ok) / self.duration_s if self.duration_s > 0 else None

    def to_json(self) -> LoadSummary:
        ok = self.ok
        failed = [r for r in self.records if not r.ok]
        errors: dict[str, int] = {}
        for r in failed:
            key = (r.error or r.status)[:120]
            errors[key] = errors.get(key, 0) + 1
        target, achieved = self.target_rate_rps, self.achieved_rate_rps
        itl = [x for r in ok for x in r.itl_ms]
        out_tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
        return {
            "config": self.config,
            "requests": {
                "total": len(self.records),
                "ok": len(ok),
                "failed": len(failed),  # every request that is not ok: the three below together
                "truncated": sum(r.status == TRUNCATED for r in failed),
                "timed_out": sum(r.status == TIMEOUT for r in failed),
                "errored": sum(r.status == FAILED for r in failed),
                "failed_rate": len(failed) / len(self.records) if self.records else None,
                "errors": errors,
            },
            "duration_s": self.duration_s,
            "target_rate_rps": target,
            "achieved_rate_rps": achieved,
            "achieved_over_target": achieved / target if target and achieved else None,
            "throughput_rps": self.throughput_rps,
            "schedule_lag_ms": latency_summary(r.lag_ms for r in self.records),
            "ttft_ms": latency_summary(r.ttft_ms for r in ok),
            "tpot_ms": latency_summary(r.tpot_ms for r in ok),
            "itl_ms": latency_summary(itl),
            "e2e_ms": latency_summary(r.e2e_ms for r in ok),
            "queue_ms": latency_summary(r.queue_ms for r in ok),
            "tokens": {
                "input": sum(r.input_tokens or 0 for r in ok),
                "output": sum(out_tokens),
                "sources": sorted({r.token_source for r in ok if r.token_source}),
            },
            "energy": self.energy,
            "audits": audit_verdicts(self.energy.get("audits") or []),
            "meter_methods": dict(self.meter.methods) if self.meter else {},
            "meter": self.meter.to_dict() if self.meter else None,
            "estimated": bool(self.meter and self.meter.is_estimated),
        }

    def request_rows(self) -> list[dict[str, Any]]:
        label = self.energy.get("method")
        rows = []
        for r in self.records:
            row = r.to_row()
            if r.energy_j is not None:
                row["energy_method"] = f"{label}/timeline-token-share"
            rows.append(row)
        return rows


def audit_verdicts(audits: Sequence[Mapping[str, Any]]) -> AuditVerdicts:
    """``{"passed": n, "failed": [check names]}``: the audit verdicts at the top of a summary.

    A failing check never changes a run's status (done/failed/interrupted); it is shown here, in
    the audits table of the store, and in the report.
    """
    failed = [str(a.get("name")) for a in audits if not a.get("passed")]
    return {"passed": len(audits) - len(failed), "failed": failed}


def _prompt_input(p: Any) -> PromptInput:
    """Text, or a chat (list of ``{"role", "content"}``), from a str, a dict or a prompt object
    (``joulebench.workloads.prompts.Prompt`` carries ``messages``)."""
    if isinstance(p, str):
        return p
    get = p.get if isinstance(p, dict) else lambda k: getattr(p, k, None)
    messages = get("messages")
    if (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
    ):
        return [{"role": str(m.get("role", "user")), "content": m["content"]} for m in messages]
    for key in ("text", "prompt", "content"):
        value = get(key)
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"cannot read a prompt from {type(p).__name__}: expected text or chat messages"
    )


def _lengths(output_length: int | Sequence[int], n: int) -> list[int]:
    if isinstance(output_length, int):
        lengths = [output_length] * n
    else:
        lengths = [int(x) for x in output_length]
        if not lengths:
            raise ConfigError("output lengths are empty")
        lengths = [lengths[i % len(lengths)] for i in range(n)]
    bad = [x for x in lengths if x < 1]
    if bad:
        raise ConfigError(f"output length must be ≥ 1 token, got {bad[0]}")
    return lengths


async def _with_timeout(coro: Coroutine[Any, Any, Any], timeout_s: float) -> None:
    """``asyncio.timeout`` where it exists (no extra task per request), else ``wait_for``."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        await asyncio.wait_for(coro, timeout_s)
        return
    async with timeout(timeout_s):
        await coro


@dataclass(slots=True)
class _Plan:
    """One load test's checked inputs: where, how and what is sent, and on which schedule."""

    url: str
    protocol: str
    arrival: ArrivalProcess
    client: ProtocolClient
    texts: list[PromptInput]
    lengths: list[int]
    output_length: int | Sequence[int]
    forced: bool
    concurrency: int | None
    timeout_s: float
    seed: int

    @property
    def n(self) -> int:
        return len(self.lengths)

    @property
    def cap(self) -> int | None:
        """Requests in flight at most: one in a closed loop, else the concurrency cap."""
        return 1 if self.arrival.closed_loop else self.concurrency

    def offered_rate_rps(self) -> float | None:
        """The rate this schedule actually offers; the arrival's nominal rate if it cannot say."""
        target = self.arrival.target_rate_rps
        offsets = self.arrival.schedule(self.n)
        if not self.arrival.closed_loop and self.n > 1 and offsets[-1] > 0:
            target = (self.n - 1) / offsets[-1]
        return target

    def config(self, idle_power_w: float | None) -> dict[str, Any]:
        """The ``config`` section of the summary."""
        return {
            "url": self.url,
            "protocol": self.protocol,
            "arrival": self.arrival.describe(),
            "n": self.n,
            "output_length": (
                self.output_length if isinstance(self.output_length, int) else "per-prompt"
            ),
            "forced_length": self.forced,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "seed": self.seed,
            "model": self.client.model,
            "idle_power_w": idle_power_w,
        }


def _check_limits(n: int, concurrency: int | None, timeout_s: float) -> None:
    at_least(n, 1, "--n")
    if concurrency is not None:
        at_least(concurrency, 1, "--concurrency")
    if timeout_s <= 0:
        raise ConfigError(f"--timeout-s must be positive, got {timeout_s}")


def _prompt_inputs(prompts: Sequence[Any]) -> list[PromptInput]:
    texts = [_prompt_input(p) for p in prompts]
    if not texts:
        raise ConfigError("no prompts to send")
    return texts


async def _discover_model(http: httpx.AsyncClient) -> str | None:
    try:
        resp = await http.get("/v1/models", timeout=5.0)
        data = resp.json().get("data") or []
        return str(data[0]["id"]) if resp.status_code == 200 and data else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None


async def _drive(
    plan: _Plan, *, clock: Callable[[], float], on_start: Callable[[], None]
) -> tuple[list[RequestRecord], float, float]:
    url, client, arrival = plan.url, plan.client, plan.arrival
    texts, lengths, timeout_s = plan.texts, plan.lengths, plan.timeout_s
    n = len(lengths)
    offsets = arrival.schedule(n)
    cap = plan.cap
    # No per-operation httpx timeouts (see LoadClient): the whole request is bounded by
    # _with_timeout.
    async with LoadClient(url) as http:
        if client.name.startswith("openai") and client.model is None:
            client.model = await _discover_model(http)
        records = [RequestRecord(i, 0.0) for i in range(n)]
        slots = asyncio.Semaphore(cap) if cap and not arrival.closed_loop else None

        async def one(rec: RequestRecord) -> None:
            i = rec.idx
            try:
                await _with_timeout(
                    client.send(http, rec, texts[i % len(texts)], lengths[i], clock), timeout_s
                )
            except asyncio.TimeoutError:
                rec.status, rec.end_s = TIMEOUT, clock()
                rec.error = f"timed out after {timeout_s:g} s"
            except Exception as exc:  # a client bug must not lose the other requests
                log.exception("request %d crashed", i)
                rec.status, rec.end_s = FAILED, clock()  # even if the client had marked it ok
                rec.error = f"{type(exc).__name__}: {exc}"
            finally:
                if slots is not None:
                    slots.release()

        on_start()
        with _no_full_gc():
            # a closed loop sends at once, so its window starts now, not START_DELAY_S later
            t0 = clock() + (0.0 if arrival.closed_loop else START_DELAY_S)
            tasks: list[asyncio.Task[None]] = []
            if arrival.closed_loop:
                slots = None  # one at a time by construction: each request awaited in turn
                for rec in records:
                    rec.intended_send_s = clock()
                    await one(rec)
            else:
                for rec, off in zip(records, offsets, strict=True):
                    rec.intended_send_s = t0 + off
                    delay = rec.intended_send_s - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if slots is not None:
                        await slots.acquire()
                    tasks.append(asyncio.create_task(one(rec)))
                await asyncio.gather(*tasks)
            end = clock()
    return records, t0, end


@contextlib.contextmanager
def _no_full_gc() -> Iterator[None]:
    """No full (generation 2) garbage collection while requests are dispatched.

    A full collection walks every object of the process (tens of milliseconds with torch and
    transformers imported): each one would make a burst of requests late. The heap that exists
    before the run is frozen out of collection and full collections are held back; young
    generations are still collected, and everything is back as it was afterwards.
    """
    global _gc_holds, _gc_thresholds
    with _gc_lock:  # overlapping runs (threads, tasks): the first in saves, the last out restores
        if _gc_holds == 0:
            _gc_thresholds = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(_gc_thresholds[0], _gc_thresholds[1], 1 << 30)
        _gc_holds += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holds -= 1
            if _gc_holds == 0:
                gc.set_threshold(*_gc_thresholds)
                gc.unfreeze()


_gc_lock = threading.Lock()
_gc_holds = 0
_gc_thresholds: tuple[int, int, int] = gc.get_threshold()


async def _drive_timed(
    plan: _Plan, timeline: PowerTimeline | None, clock: Callable[[], float]
) -> tuple[list[RequestRecord], float, float]:
    """:func:`_drive`, with the power timeline running from the first send to the last answer."""
    started = False

    def on_start() -> None:
        nonlocal started
        if timeline is not None:
            timeline.start()
        started = True

    try:
        return await _drive(plan, clock=clock, on_start=on_start)
    finally:
        if timeline is not None and started:
            timeline.stop()


def _account_energy(
    records: list[RequestRecord],
    timeline: PowerTimeline | None,
    info: MeterInfo | None,
    *,
    cap: int | None,
    idle_power_w: float | None,
    timeline_hz: float,
) -> dict[str, Any]:
    """The ``energy`` section: the timeline's energy shared out over the requests."""
    series = timeline.series() if timeline is not None else None
    min_window = max(info.update_period_s if info else 0.0, 2.0 / timeline_hz)
    return account(
        records,
        series,
        idle_power_w=idle_power_w,
        meter_label=info.method_label if info else None,
        concurrency=cap,
        min_window_s=min_window,
        update_period_s=info.update_period_s if info else 0.0,
    )


class _OtherProcesses:
    """What an estimator (system scope) leaves out: other processes' CPU, counted over the run."""

    def __init__(self, meter: Meter | None) -> None:
        others = getattr(meter, "other_processes", None)
        self._read: Callable[[], dict[str, float]] | None = others if callable(others) else None
        self._start = self._read() if self._read is not None else None

    def add_to(self, config: dict[str, Any]) -> None:
        """``other_processes_subtracted``: their share since the start, if the meter says."""
        if self._read is not None and self._start is not None:
            end = self._read()
            config["other_processes_subtracted"] = {k: end[k] - self._start[k] for k in end}


async def run_load_async(
    url: str,
    protocol: str,
    arrival: str | ArrivalProcess,
    prompts: Sequence[Any],
    *,
    n: int,
    output_length: int | Sequence[int],
    concurrency: int | None = None,
    timeout_s: float = 60.0,
    meter: Meter | None = None,
    idle_power_w: float | None = None,
    seed: int = 0,
    model: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    tokenizer: Tokenizer | None = None,
    timeline_hz: float = 10.0,
    forced: bool = False,
) -> LoadResult:
    """Send ``n`` requests to ``url`` and measure them (see the module docstring).

    ``clock`` must be the meter's clock when a meter is given (both default to
    ``time.monotonic``), so request spans and the power timeline line up. ``forced``: the
    output lengths are forced (min = max); an answer with fewer tokens is ``truncated``
    (:mod:`joulebench.load.clients`).
    """
    _check_limits(n, concurrency, timeout_s)
    texts = _prompt_inputs(prompts)
    proc = parse_arrival(arrival, seed=seed) if isinstance(arrival, str) else arrival
    client = make_client(protocol, model=model, tokenizer=tokenizer, forced=forced)
    plan = _Plan(
        url=url,
        protocol=protocol,
        arrival=proc,
        client=client,
        texts=texts,
        lengths=_lengths(output_length, n),
        output_length=output_length,
        forced=forced,
        concurrency=concurrency,
        timeout_s=timeout_s,
        seed=seed,
    )
    timeline = PowerTimeline(meter, hz=timeline_hz) if meter is not None else None
    info = MeterInfo.of(meter) if meter is not None else None
    others = _OtherProcesses(meter)
    records, t0, end = await _drive_timed(plan, timeline, clock)
    energy = _account_energy(
        records, timeline, info, cap=plan.cap, idle_power_w=idle_power_w, timeline_hz=timeline_hz
    )
    target = plan.offered_rate_rps()
    config = plan.config(idle_power_w)
    others.add_to(config)
    samples = [(s.t_s, dict(s.energy_j)) for s in timeline.samples] if timeline else []
    return LoadResult(config, records, t0, end, target, energy, info, samples)


def _blocking(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """``fn_async`` as ``fn``: same signature, run to completion on its own event loop."""

    @functools.wraps(fn)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(fn(*args, **kwargs))

    blocking.__name__ = blocking.__qualname__ = fn.__name__.removesuffix("_async")
    blocking.__doc__ = (
        f"Synchronous :func:`{fn.__name__}` (runs its own event loop; call the async one from "
        "inside a running loop)."
    )
    return blocking


run_load = _blocking(run_load_async)
