"""``ignore_eos`` (vLLM's extension, what ``joulebench load`` sends for forced lengths) is
honoured by every scheduler: the answer runs to max_tokens past the model's EOS."""

from __future__ import annotations

import asyncio

import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import build_engine
from joulebench.serve.request import FinishEvent, FinishReason, SamplingParams, TokenEvent

pytestmark = pytest.mark.integration

PROMPT = [5, 6, 7, 8]


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from joulebench.workloads.models import load_model

    return load_model(str(tiny_model_dir), "fp32")


async def _answer(engine, sampling: SamplingParams) -> tuple[list[int], FinishEvent]:
    handle = engine.submit(PROMPT, max_tokens=6, sampling=sampling, endpoint="test")
    tokens: list[int] = []
    final = None
    async for e in handle.events():
        if isinstance(e, TokenEvent):
            tokens.extend(e.token_ids)
        elif isinstance(e, FinishEvent):
            final = e
    assert final is not None
    return tokens, final


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic", "continuous"])
def test_ignore_eos_runs_to_max_tokens(tiny_loaded, scheduler):
    engine = build_engine(
        tiny_loaded, scheduler=scheduler, meter=FakeMeter(1.0, update_period_s=1e-4), window_s=0.05
    )
    engine.start()
    try:
        first, _ = asyncio.run(_answer(engine, SamplingParams()))
        # make the greedy answer's first token the model's EOS: a normal request stops at once
        engine.eos_token_ids = frozenset({first[0]})
        stopped, end = asyncio.run(_answer(engine, SamplingParams()))
        assert len(stopped) == 1 and end.reason == FinishReason.STOP
        forced, end = asyncio.run(_answer(engine, SamplingParams(ignore_eos=True)))
        assert len(forced) == 6 and end.reason == FinishReason.LENGTH
    finally:
        engine.stop()
