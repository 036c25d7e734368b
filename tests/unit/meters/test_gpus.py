"""A GPU run whose meter has no GPU domain is an error, or (allowed) loudly estimated."""

from __future__ import annotations

import pytest
import torch

from joulebench.meters.base import MeterInfo, Method
from joulebench.meters.fake import FakeMeter
from joulebench.meters.gpus import (
    GpuMissingMeter,
    MissingGpuDomain,
    cuda_ordinals,
    require_gpu_domain,
)
from joulebench.meters.registry import open_meter


def cpu_only() -> FakeMeter:
    return FakeMeter({"cpu:0": 40.0}, method=Method.RAPL, name="rapl-like")


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        ([torch.device("cpu")], []),
        ([torch.device("cuda:3"), "cuda:1", torch.device("cuda:3")], [1, 3]),
        (["cuda:2", "meta"], [2]),
    ],
)
def test_cuda_ordinals_of_a_workloads_devices(devices, expected):
    assert cuda_ordinals(devices) == expected


def test_cpu_run_needs_no_gpu_domain():
    meter = cpu_only()
    assert require_gpu_domain(meter, [torch.device("cpu")]) is meter


def test_cuda_run_without_gpu_domain_fails_with_what_to_do():
    with pytest.raises(
        MissingGpuDomain, match=r"cuda:0.*'rapl-like' measures no GPU.*--meter nvml"
    ):
        require_gpu_domain(cpu_only(), [torch.device("cuda:0")])


def test_cuda_run_on_an_unmeasured_gpu_fails():
    meter = FakeMeter({"gpu:0": 300.0, "cpu:0": 40.0})
    with pytest.raises(MissingGpuDomain, match=r"cuda:1.*measures gpu:0"):
        require_gpu_domain(meter, [torch.device("cuda:1")])


def test_allowed_missing_gpu_is_labelled_estimated_loudly():
    with pytest.warns(Warning, match=r"labelled estimated"):
        meter = require_gpu_domain(cpu_only(), ["cuda:0"], allow_missing=True)
    assert isinstance(meter, GpuMissingMeter)
    info = MeterInfo.of(meter)
    assert info.is_estimated and info.method_label == "estimated"
    assert info.parameters["measured_methods"] == {"cpu:0": "rapl"}
    assert "(GPU not measured)" in info.name


def test_allow_missing_gpu_travels_with_the_opened_meter():
    strict = open_meter("estimate")
    allowed = open_meter("estimate", allow_missing_gpu=True)
    try:
        with pytest.raises(MissingGpuDomain):
            require_gpu_domain(strict, ["cuda:0"])
        with pytest.warns(Warning, match="labelled estimated"):
            assert isinstance(require_gpu_domain(allowed, ["cuda:0"]), GpuMissingMeter)
    finally:
        strict.close()
        allowed.close()
