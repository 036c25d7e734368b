from __future__ import annotations

import pytest

from joulebench.analysis.roofline import (
    GPU_TABLE,
    BatchShape,
    ModelShape,
    given_peak,
    gpu_peak,
    roofline,
)
from joulebench.errors import ConfigError
from joulebench.workloads.precision import parse_precision

LLAMA8B = dict(
    num_hidden_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
)


def test_llama_8b_parameter_count_from_config():
    s = ModelShape.from_config(LLAMA8B)
    # 8.03 B total = layers + lm_head + input embeddings (0.525 B, not counted: a lookup).
    assert s.n_layers * s.layer_params + s.head_params == pytest.approx(7.50e9, rel=0.01)
    with pytest.raises(ConfigError, match="hidden_size"):
        ModelShape.from_config({"num_hidden_layers": 2})


def test_decode_is_memory_bound_prefill_compute_bound_on_h100():
    s = ModelShape.from_config(LLAMA8B)
    r = roofline(
        s,
        [BatchShape(1, 1200, 100)],
        "bf16",
        GPU_TABLE["H100 SXM"],
        measured_s={"prefill": 0.1, "decode": 2.0},
    )
    assert r["prefill"]["bound"] == "compute" and r["decode"]["bound"] == "memory"
    # decode floor ≈ 100 steps × 15 GB of bf16 weights / 3.35 TB/s ≈ 0.45 s
    assert r["decode"]["time_floor_s"] == pytest.approx(100 * 15.0e9 / 3.35e12, rel=0.05)
    assert r["decode"]["efficiency"] == pytest.approx(r["decode"]["time_floor_s"] / 2.0)
    # halving bytes/param (fp32 → bf16) halves the memory-bound floor
    r32 = roofline(s, [BatchShape(1, 1200, 100)], "fp32", GPU_TABLE["H100 SXM"])
    assert r32["decode"]["time_floor_s"] > 1.9 * r["decode"]["time_floor_s"]


def test_batching_amortises_weights_in_decode():
    s = ModelShape.from_config(LLAMA8B)
    one = roofline(s, [BatchShape(1, 500, 50)], "bf16", GPU_TABLE["H100 SXM"])["decode"][
        "time_floor_s"
    ]
    eight = roofline(s, [BatchShape(8, 500, 50)], "bf16", GPU_TABLE["H100 SXM"])["decode"][
        "time_floor_s"
    ]
    assert eight < 2 * one


@pytest.mark.parametrize(
    ("precision", "weight_kind", "peak"),
    [
        ("bfloat16", "bf16", "bf16"),
        ("int4-nf4", "int4", "bf16"),
        ("int4-fp4", "int4", "fp32"),
        ("int8-bnb", "int8", "int8"),
        ("int8-torchao", "int8", "bf16"),
        ("fp8", "fp8", "fp8"),
    ],
)
def test_precision_sets_the_weight_bytes_and_the_peak(precision, weight_kind, peak):
    s = ModelShape.from_config({**LLAMA8B, "dtype": "bfloat16"})
    b = [BatchShape(1, 100, 10)]
    r = roofline(s, b, precision, GPU_TABLE["H100 SXM"])
    assert r["precision"] == weight_kind and r["compute_dtype"] == peak
    assert r["peak_flops_per_s"] == GPU_TABLE["H100 SXM"].flops_per_s[peak]
    bf16 = roofline(s, b, "bf16", GPU_TABLE["H100 SXM"])
    weights_bf16 = (s.n_layers * s.layer_params + s.head_params) * 2.0
    bits = {"bf16": 16, "int8": 8, "fp8": 8, "int4": 4}[weight_kind]
    extra = weights_bf16 * (bits / 16 - 1)  # one read of the weights per prefill forward
    assert r["prefill"]["bytes"] == pytest.approx(bf16["prefill"]["bytes"] + extra)


def test_roofline_takes_the_parsed_precision_with_its_knobs():
    s = ModelShape.from_config(LLAMA8B)
    b = [BatchShape(2, 200, 20)]
    nf4 = parse_precision("int4-nf4", compute_dtype="float32")
    by_spec = roofline(s, b, nf4, GPU_TABLE["H100 SXM"])
    assert by_spec["compute_dtype"] == "fp32"
    # the name alone loses the knob
    assert roofline(s, b, "int4-nf4", GPU_TABLE["H100 SXM"])["compute_dtype"] == "bf16"
    with pytest.raises(ConfigError, match="known"):
        roofline(s, b, "int3", GPU_TABLE["H100 SXM"])


def test_gpu_matching():
    assert gpu_peak("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert gpu_peak("NVIDIA H100 PCIe").name == "H100 PCIe"
    assert gpu_peak("NVIDIA L4").name == "L4"
    assert gpu_peak("NVIDIA L40S").name == "L40S"
    assert gpu_peak("Some Unknown Card") is None


@pytest.mark.parametrize(
    ("device", "memory_gb", "key"),
    [
        ("NVIDIA L40", None, "L40"),  # not the L4's 300 GB/s
        ("NVIDIA L4", 23.0, "L4"),
        ("NVIDIA H100 NVL", 94.0, "H100 NVL"),  # not the SXM's figures
        ("NVIDIA H100 PCIe", 80.0, "H100 PCIe"),
        ("NVIDIA H100 80GB HBM3", 80.0, "H100 SXM"),
        ("NVIDIA H200", 141.0, "H200"),
        ("NVIDIA H200 NVL", 141.0, "H200 NVL"),
        ("NVIDIA A100-SXM4-40GB", 40.0, "A100 SXM 40GB"),
        ("NVIDIA A100-SXM4-80GB", 80.0, "A100 SXM 80GB"),
        ("NVIDIA A100-PCIE-40GB", 40.0, "A100 PCIe 40GB"),
        ("NVIDIA A100 80GB PCIe", 80.0, "A100 PCIe 80GB"),
        ("NVIDIA A100-PCIE", 79.2, "A100 PCIe 80GB"),  # the memory tells them apart
        ("NVIDIA A100-PCIE", 39.4, "A100 PCIe 40GB"),
        ("NVIDIA GeForce RTX 4090", 24.0, "RTX 4090"),
    ],
)
def test_gpu_matching_by_exact_product_and_memory(device, memory_gb, key):
    assert gpu_peak(device, memory_gb) is GPU_TABLE[key]


@pytest.mark.parametrize(
    "device",
    ["NVIDIA A100-PCIE", "NVIDIA H100", "NVIDIA GH200 480GB", "NVIDIA L4S", "NVIDIA L400", "A10"],
)
def test_an_ambiguous_or_unknown_gpu_borrows_no_neighbours_peaks(device):
    assert gpu_peak(device) is None  # no memory given for the A100-PCIE: which one is unknown


def test_kv_cache_bytes_use_the_models_dtype_not_the_compute_dtype():
    # an int8-bnb model computes its matmuls in int8/fp16 but keeps an fp32 cache when loaded
    # in fp32: decode reads 4 bytes per cached element, not 2
    fp32_model = ModelShape.from_config({**LLAMA8B, "dtype": "float32"})
    bf16_model = ModelShape.from_config({**LLAMA8B, "torch_dtype": "bfloat16"})
    assert fp32_model.kv_dtype == "fp32" and bf16_model.kv_dtype == "bf16"
    b = [BatchShape(4, 1000, 100)]
    big = roofline(fp32_model, b, "int8-bnb", GPU_TABLE["H100 SXM"])
    small = roofline(bf16_model, b, "int8-bnb", GPU_TABLE["H100 SXM"])
    assert big["kv_dtype"] == "fp32" and big["kv_dtype_source"] == "model config"
    kv_elems = fp32_model.kv_per_token * sum(4 * (1000 + s + 1) for s in range(100))
    assert big["decode"]["bytes"] - small["decode"]["bytes"] == pytest.approx(2.0 * kv_elems)
    assert roofline(ModelShape.from_config(LLAMA8B), b, "bf16", GPU_TABLE["H100 SXM"])[
        "kv_dtype_source"
    ].startswith("compute dtype")
    assert all(p.source for p in GPU_TABLE.values())
    with pytest.raises(ConfigError):
        given_peak(0, 10)


def test_non_positive_measured_time_has_no_efficiency():
    # subtraction-only decode latency is generate(N) − generate(1): lost in noise it can be ≤ 0,
    # and floor / negative time printed a negative "efficiency"
    s = ModelShape.from_config(LLAMA8B)
    r = roofline(
        s,
        [BatchShape(1, 100, 10)],
        "bf16",
        GPU_TABLE["H100 SXM"],
        measured_s={"prefill": 0.1, "decode": -0.002},
    )
    assert r["decode"]["measured_s"] == -0.002 and r["decode"]["efficiency"] is None
    assert r["prefill"]["efficiency"] == pytest.approx(r["prefill"]["time_floor_s"] / 0.1)
