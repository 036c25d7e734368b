"""A request that fails inside the engine fails alone, on every scheduler.

Requests go straight to :meth:`ServingEngine.submit`, bypassing the HTTP edge's validation: the
engine must not trust it. A poisoned request (a token id beyond the vocabulary, or for the
sampling schedulers a subnormal temperature) among five valid ones: the five succeed, the bad one
fails with an error, the next three succeed, and every request gets exactly one final answer.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import build_engine
from joulebench.serve.request import FinishEvent, FinishReason, SamplingParams

pytestmark = pytest.mark.integration

FAST = {"update_period_s": 1e-4}
GOOD = [5, 6, 7, 8]
GREEDY = SamplingParams()


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from joulebench.workloads.models import load_model

    return load_model(str(tiny_model_dir), "fp32")


def _engine(tiny_loaded, scheduler, monkeypatch):
    """A started engine whose edge validation is off: the scheduler sees what the client sent."""
    engine = build_engine(
        tiny_loaded, scheduler=scheduler, meter=FakeMeter(1.0, **FAST), window_s=0.2
    )
    monkeypatch.setattr(engine, "validate", lambda ids, max_tokens, sampling: max_tokens)
    engine.start()
    return engine


async def _run(engine, requests):
    """Submit ``requests`` ((prompt ids, sampling) pairs) together; count every final event."""
    handles = [
        engine.submit(ids, max_tokens=3, sampling=sp, endpoint="test") for ids, sp in requests
    ]
    finals: list[FinishEvent] = []
    for h in handles:
        events = [e async for e in h.events()]
        ends = [e for e in events if isinstance(e, FinishEvent)]
        assert len(ends) == 1, f"{h.id}: {len(ends)} final events"
        finals.append(ends[0])
    await asyncio.sleep(0.05)  # a duplicate final event would arrive here
    for h in handles:
        assert h._queue.empty(), f"{h.id} was answered twice"
    return finals


def _check_isolated(engine, bad_ids, bad_sampling=GREEDY):
    vocab = engine.model.config.vocab_size
    batch = [([*GOOD, i], GREEDY) for i in range(5)]
    batch.insert(2, (bad_ids(vocab), bad_sampling))

    async def scenario():
        first = await _run(engine, batch)
        later = await _run(engine, [(GOOD, GREEDY)] * 3)
        return first, later

    first, later = asyncio.run(scenario())
    reasons = [f.reason for f in first]
    assert reasons[2] is FinishReason.ERROR and first[2].error
    assert all(r in (FinishReason.LENGTH, FinishReason.STOP) for r in reasons[:2] + reasons[3:]), [
        (f.reason, f.error) for f in first
    ]
    assert all(f.reason in (FinishReason.LENGTH, FinishReason.STOP) for f in later), [
        (f.reason, f.error) for f in later
    ]
    assert engine.outstanding == 0
    assert engine.health()["status"] == "ok"
    finished = sum(engine.metrics.requests.values())
    assert finished == 9  # in == out


def _out_of_vocab(vocab):
    return [5, vocab + 7, 6]


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic", "continuous"])
def test_out_of_vocab_request_fails_alone(tiny_loaded, scheduler, monkeypatch):
    engine = _engine(tiny_loaded, scheduler, monkeypatch)
    try:
        _check_isolated(engine, _out_of_vocab)
    finally:
        engine.stop()


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic"])
def test_subnormal_temperature_fails_alone(tiny_loaded, scheduler, monkeypatch):
    engine = _engine(tiny_loaded, scheduler, monkeypatch)
    try:
        _check_isolated(engine, lambda vocab: GOOD, SamplingParams(temperature=5e-324))
    finally:
        engine.stop()


def test_continuous_manager_restarts_and_health_says_so(tiny_loaded, monkeypatch):
    """The poisoned request kills transformers' generation loop: health() is unavailable until
    the scheduler has started a new manager, /metrics counts the restart, nothing is lost."""
    engine = _engine(tiny_loaded, "continuous", monkeypatch)
    seen: list[str] = []
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            state = engine.health()["status"]
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _check_isolated(engine, _out_of_vocab)
    finally:
        watching.set()
        watcher.join()
        engine.stop()
    assert seen[0] == "ok" and "unavailable" in seen and seen[-1] == "ok", seen
    health_restarts = engine.metrics.restarts
    assert health_restarts >= 1
    text = engine.render_metrics()
    assert "joulebench_scheduler_restarts_total{" in text
    restarts = _sample(text, "joulebench_scheduler_restarts_total")
    requeued = _sample(text, "joulebench_requeued_total")
    failed = _sample(text, "joulebench_failed_by_restart_total")
    assert restarts == health_restarts and failed == 1 and requeued >= 0


def _sample(text, name):
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + "{")]
    return float(line.rsplit(" ", 1)[1])


def test_continuous_http_health_is_503_while_restarting(tiny_loaded):
    """/health answers 503 while the dead manager is replaced and 200 after; /metrics counts it."""
    from joulebench.serve.launch import embedded_server

    with embedded_server(tiny_loaded, scheduler="continuous", meter=FakeMeter(1.0, **FAST)) as url:
        engine = embedded_server.last  # type: ignore[attr-defined]
        engine.validate = lambda ids, max_tokens, sampling: max_tokens
        codes: list[int] = []
        watching, first_seen = threading.Event(), threading.Event()

        def watch():
            with httpx.Client(base_url=url) as client:
                while not watching.is_set():
                    code = client.get("/health").status_code
                    if not codes or codes[-1] != code:
                        codes.append(code)
                    first_seen.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            # on a loaded machine the watcher's first answer can come late: the bad request
            # must not kill the manager before /health was seen healthy once
            assert first_seen.wait(30.0)
            _check_isolated(engine, _out_of_vocab)
            time.sleep(0.05)
        finally:
            watching.set()
            watcher.join()
        assert codes[0] == 200 and 503 in codes and codes[-1] == 200, codes
        metrics = httpx.get(url + "/metrics").text
        assert _sample(metrics, "joulebench_scheduler_restarts_total") >= 1


def test_continuous_streamed_request_is_failed_explicitly_by_a_restart(tiny_loaded, monkeypatch):
    """A request that had already streamed tokens when the loop died cannot be replayed: it gets
    an explicit error (never silence, never a second answer); the culprit gets its own error."""
    engine = _engine(tiny_loaded, "continuous", monkeypatch)
    engine.eos_token_ids = frozenset()
    vocab = engine.model.config.vocab_size

    async def scenario():
        long = engine.submit(GOOD, max_tokens=400, sampling=GREEDY, endpoint="t")
        while len(long.req.generated) < 3:
            await long.next_event(5.0)
        bad = engine.submit(_out_of_vocab(vocab), max_tokens=3, sampling=GREEDY, endpoint="t")
        return await long.wait(), await bad.wait(), await _run(engine, [(GOOD, GREEDY)] * 3)

    try:
        long_end, bad_end, later = asyncio.run(scenario())
    finally:
        engine.stop()
    assert long_end.reason is FinishReason.ERROR and "were sent" in long_end.error
    assert bad_end.reason is FinishReason.ERROR and "broke the generation step" in bad_end.error
    assert all(f.reason is FinishReason.LENGTH for f in later)
    assert engine.metrics.restarts >= 1 and engine.metrics.failed_by_restart == 2
    assert sum(engine.metrics.requests.values()) == 5


def test_continuous_restart_that_fails_answers_every_request(tiny_loaded, monkeypatch):
    """If no new manager can be started, health() says why and every request still gets an
    explicit error (none waits forever)."""
    engine = _engine(tiny_loaded, "continuous", monkeypatch)

    def cannot_launch():
        raise RuntimeError("no memory for a new cache")

    monkeypatch.setattr(engine.scheduler, "_launch", cannot_launch)
    vocab = engine.model.config.vocab_size

    async def scenario():
        bad = await _run(engine, [(_out_of_vocab(vocab), GREEDY)])
        return bad, await _run(engine, [(GOOD, GREEDY)] * 2)

    try:
        bad, later = asyncio.run(asyncio.wait_for(scenario(), 20.0))
        health = engine.health()
    finally:
        engine.stop()
    assert [f.reason for f in bad + later] == [FinishReason.ERROR] * 3
    assert health["status"] == "unavailable" and "restart failed" in health["reason"]
    assert engine.outstanding == 0
