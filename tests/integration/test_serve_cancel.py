"""A non-streamed request whose client has gone stops within a step or two, on every scheduler.

The client asks for a long answer (end-of-sequence tokens disabled, so only max_tokens or the
cancel can end it), hangs up after a second, and the test counts the forward steps the scheduler
runs after the request's cancel flag was set (the engine's step counter, not wall time).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import embedded_server

pytestmark = pytest.mark.integration

FAST = {"update_period_s": 1e-4}
MAX_STEPS_AFTER_CANCEL = 2


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from joulebench.workloads.models import load_model

    return load_model(str(tiny_model_dir), "fp32")


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic", "continuous"])
def test_abandoned_non_streamed_request_stops_within_two_steps(tiny_loaded, scheduler):
    max_tokens = tiny_loaded.context_length - 16
    with embedded_server(
        tiny_loaded, scheduler=scheduler, meter=FakeMeter(1.0, **FAST), window_s=0.0
    ) as url:
        engine = embedded_server.last  # type: ignore[attr-defined]
        engine.eos_token_ids = frozenset()  # only max_tokens or the cancel ends it
        scheduler_obj = engine.scheduler
        at_cancel: list[int] = []
        original_cancel = scheduler_obj.cancel

        def cancel(req):
            at_cancel.append(engine.metrics.steps)
            original_cancel(req)

        scheduler_obj.cancel = cancel
        done = threading.Event()
        finished_steps: list[int] = []
        original_finish = engine.on_finish

        def on_finish(req, reason, error=None):
            finished_steps.append(engine.metrics.steps)
            original_finish(req, reason, error)
            done.set()

        engine.on_finish = on_finish
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                url + "/v1/completions",
                json={"prompt": "hello there", "max_tokens": max_tokens},
                timeout=httpx.Timeout(10.0, read=1.0),
            )
        assert done.wait(10.0), "the abandoned request was never finished"
        steps_at_hangup = at_cancel[0] if at_cancel else None
        deadline = time.monotonic() + 10
        while engine.outstanding and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.outstanding == 0
        metrics = httpx.get(url + "/metrics").text
        assert 'reason="cancelled"' in metrics, metrics
        assert steps_at_hangup is not None, "the request was not cancelled"
        # it ran for a while (it was not finished by max_tokens before the hang-up)
        assert finished_steps[0] < max_tokens
        extra = engine.metrics.steps - steps_at_hangup
        assert extra <= MAX_STEPS_AFTER_CANCEL, f"{extra} steps ran after the cancel"


def test_dynamic_drops_a_cancelled_row_and_its_batch_mate_is_unchanged(tiny_loaded):
    """A cancelled row leaves the static batch at the next step (the batch shrinks), and the row
    left running produces exactly the tokens it produces alone."""
    import asyncio

    from joulebench.serve.launch import build_engine
    from joulebench.serve.request import FinishReason, SamplingParams

    engine = build_engine(
        tiny_loaded, scheduler="dynamic", meter=FakeMeter(1.0, **FAST), window_s=0.3
    )
    engine.eos_token_ids = frozenset()
    sizes: list[int] = []
    original_step = engine.on_step

    def on_step(step):
        sizes.append(step.batch_size)
        original_step(step)

    engine.on_step = on_step
    greedy = SamplingParams()
    engine.start()
    try:

        async def scenario():
            alone = engine.submit([5, 6, 7], max_tokens=12, sampling=greedy, endpoint="t")
            await alone.wait()
            sizes.clear()
            keep = engine.submit([5, 6, 7], max_tokens=12, sampling=greedy, endpoint="t")
            gone = engine.submit([9, 10, 11, 12, 13], max_tokens=12, sampling=greedy, endpoint="t")
            async for _event in gone.events():
                if len(gone.req.generated) >= 3:
                    gone.cancel()
            await keep.wait()
            return alone, keep, gone

        alone, keep, gone = asyncio.run(scenario())
    finally:
        engine.stop()
    assert gone.final.reason is FinishReason.CANCELLED
    assert keep.req.generated == alone.req.generated
    assert sizes[0] == 2 and sizes[-1] == 1, sizes
    assert sizes.count(2) <= 3 + MAX_STEPS_AFTER_CANCEL, sizes
