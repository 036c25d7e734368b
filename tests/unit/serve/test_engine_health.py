"""ServingEngine.health(): ok while the scheduler can run requests, unavailable otherwise."""

from __future__ import annotations

import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.engine import ServingEngine


class _Model:
    """Enough of a model for the engine to build a scheduler (nothing is generated)."""

    device = "cpu"
    generation_config = None


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic"])
def test_health_follows_the_worker(scheduler):
    engine = ServingEngine(
        _Model(), None, model_name="m", context_length=64, scheduler=scheduler, meter=FakeMeter(1.0)
    )
    before = engine.health()
    assert before["status"] == "unavailable" and before["reason"]
    engine.start()
    try:
        ok = engine.health()
        assert ok == {"status": "ok", "reason": None, "scheduler": scheduler, "in_flight": 0}
    finally:
        engine.stop()
    assert engine.health()["status"] == "unavailable"
