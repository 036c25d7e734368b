"""A model on cuda with a meter that measures no GPU: profile and serve refuse before any work."""

from __future__ import annotations

import types

import pytest
import torch

from joulebench.meters.base import Method
from joulebench.meters.fake import FakeMeter
from joulebench.meters.gpus import MissingGpuDomain


class OnCuda:
    """A model whose weights claim to sit on cuda:0 (no GPU needed to build a torch.device)."""

    def __init__(self) -> None:
        self.calls = 0

    def parameters(self):
        self.calls += 1
        return iter([types.SimpleNamespace(device=torch.device("cuda:0"))])

    def buffers(self):
        return iter([])


def rapl_only() -> FakeMeter:
    return FakeMeter({"cpu:0": 40.0}, method=Method.RAPL, name="rapl")


def test_profile_cell_on_cuda_without_gpu_domain_is_an_error():
    from joulebench.profile.config import ProfileConfig
    from joulebench.profile.runner import profile_cell

    loaded = types.SimpleNamespace(
        model=OnCuda(), tokenizer=types.SimpleNamespace(pad_token_id=0), name="m"
    )
    config = ProfileConfig(model="m")
    with pytest.raises(MissingGpuDomain, match=r"cuda:0.*'rapl' measures no GPU"):
        profile_cell(loaded, [], config, rapl_only(), idle_s=0.0)


def test_serving_engine_on_cuda_without_gpu_domain_is_an_error():
    from joulebench.serve.engine import ServingEngine

    with pytest.raises(MissingGpuDomain, match="--allow-missing-gpu"):
        ServingEngine(OnCuda(), None, model_name="m", context_length=64, meter=rapl_only())
