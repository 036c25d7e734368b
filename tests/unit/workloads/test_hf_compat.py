"""transformers-version differences are decided from the model itself, and nothing leaks out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from joulebench.workloads.hf_compat import cache_arg_name, cache_kwargs, no_progress_bars
from joulebench.workloads.models import load_model


class _OldForward:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):  # transformers ≤ 5.2x
        return None


class _NewForward:
    def forward(self, input_ids=None, cache=None, use_cache=None):
        return None


def test_cache_name_follows_the_models_own_signature() -> None:
    assert cache_arg_name(_OldForward()) == "past_key_values"
    assert cache_arg_name(_NewForward()) == "cache"
    assert cache_kwargs(_OldForward(), "C") == {"past_key_values": "C"}


def test_real_model_forward_gets_its_declared_name(tiny_model_dir: Path) -> None:
    import inspect

    loaded = load_model(str(tiny_model_dir), "fp32")
    name = cache_arg_name(loaded.model)
    assert name in inspect.signature(loaded.model.forward).parameters


def test_progress_bar_switch_is_restored() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    with no_progress_bars():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with no_progress_bars():
        pass
    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()


def test_loading_prints_no_third_party_bar_or_deprecation(
    tiny_model_dir: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    caplog.set_level(logging.WARNING)
    loaded = load_model(str(tiny_model_dir), "fp32")
    import torch

    ids = torch.tensor([[1, 2, 3]])
    from transformers import DynamicCache

    with torch.inference_mode():
        loaded.model(
            input_ids=ids,
            use_cache=True,
            **cache_kwargs(loaded.model, DynamicCache(config=loaded.model.config)),
        )
    out = capfd.readouterr()
    assert "Loading weights" not in out.err + out.out
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
