from __future__ import annotations

import sys

import pytest

from joulebench.errors import ConfigError, MissingExtra, UnknownName
from joulebench.workloads.precision import (
    PRECISIONS,
    check_supported,
    linear_out_dims,
    parse_precision,
    short_dtype,
    supported_precisions,
)

TINY_CFG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def test_every_precision_parses_with_explicit_non_quantized_dtype() -> None:
    for name in PRECISIONS:
        spec = parse_precision(name)
        d = spec.to_dict()
        assert d["name"] == name
        assert d["dtype"] in {"float32", "bfloat16", "float16"}
        assert d["knobs"]["dtype"] == d["dtype"]


def test_study_defaults_are_recorded() -> None:
    int8 = parse_precision("int8-bnb")
    assert int8.knobs["llm_int8_threshold"] == 6.0
    fp4 = parse_precision("int4-fp4")
    assert fp4.compute_dtype == "float32" and fp4.knobs["quant_type"] == "fp4"
    assert fp4.knobs["double_quant"] is False
    nf4 = parse_precision("int4-nf4")
    assert nf4.knobs["double_quant"] is True and nf4.compute_dtype == "bfloat16"
    assert parse_precision("int8-torchao").knobs["config"] == "Int8WeightOnlyConfig"


@pytest.mark.parametrize(
    ("name", "weight_kind", "weight_bits", "dtype_bits", "peak_dtype"),
    [
        ("fp32", "fp32", 32, 32, "fp32"),
        ("bf16", "bf16", 16, 16, "bf16"),
        ("fp16", "fp16", 16, 16, "fp16"),
        ("int8-bnb", "int8", 8, 16, "int8"),  # LLM.int8 multiplies in int8
        ("int4-nf4", "int4", 4, 16, "bf16"),  # weight-only: dequantized to the compute dtype
        ("int4-fp4", "int4", 4, 16, "fp32"),  # the study's int4 computes in float32
        ("int8-torchao", "int8", 8, 16, "bf16"),
        ("int4-torchao", "int4", 4, 16, "bf16"),
        ("fp8", "fp8", 8, 16, "fp8"),  # float8 matmuls
    ],
)
def test_each_precision_knows_its_sizes_and_peak(
    name: str, weight_kind: str, weight_bits: int, dtype_bits: int, peak_dtype: str
) -> None:
    spec = parse_precision(name)
    assert (spec.weight_kind, spec.weight_bits, spec.peak_dtype) == (
        weight_kind,
        weight_bits,
        peak_dtype,
    )
    assert spec.dtype_bits == dtype_bits


def test_knobs_move_the_sizes_and_the_peak() -> None:
    nf4 = parse_precision("int4-nf4", compute_dtype="float32", dtype="float32")
    assert nf4.peak_dtype == "fp32" and nf4.dtype_bits == 32 and nf4.weight_bits == 4
    assert parse_precision("int8-bnb", dtype="bfloat16").peak_dtype == "int8"


def test_short_dtype_names() -> None:
    assert short_dtype("torch.bfloat16") == short_dtype("bfloat16") == short_dtype("bf16") == "bf16"
    assert short_dtype("float") == "fp32" and short_dtype("half") == "fp16"
    assert short_dtype("int8") is None and short_dtype(None) is None


def test_aliases_and_overrides() -> None:
    assert parse_precision("float16").name == "fp16"
    assert parse_precision("NF4").name == "int4-nf4"
    spec = parse_precision("int4-nf4", compute_dtype="fp32", double_quant=False)
    assert spec.compute_dtype == "float32" and spec.knobs["double_quant"] is False
    assert parse_precision(spec) is spec
    assert parse_precision("int8-bnb", llm_int8_threshold=4).knobs["llm_int8_threshold"] == 4.0


@pytest.mark.parametrize(
    ("name", "overrides", "fragment"),
    [
        ("fp32", {"llm_int8_threshold": 3.0}, "no settable knob"),
        ("int8-bnb", {"llm_int8_threshold": -1}, "must be > 0"),
        ("int4-nf4", {"compute_dtype": "int3"}, "not a dtype"),
        ("int4-nf4", {"double_quant": "yes"}, "true or false"),
        ("int4-torchao", {"group_size": 100}, "group_size"),
    ],
)
def test_bad_overrides_say_what_to_fix(name: str, overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_precision(name, **overrides)


def test_unknown_and_ambiguous_names() -> None:
    with pytest.raises(UnknownName) as info:
        parse_precision("int3")
    assert "int4-nf4" in str(info.value) and "fp32" in str(info.value)
    with pytest.raises(ConfigError, match="int4-fp4"):
        parse_precision("int4")


def test_fp8_on_cpu_fails_with_alternatives() -> None:
    with pytest.raises(ConfigError) as info:
        check_supported("fp8", "cpu", TINY_CFG)
    msg = str(info.value)
    assert "8.9" in msg and "alternatives on cpu" in msg and "int8-bnb" in msg


def test_fp8_needs_ada_or_hopper() -> None:
    with pytest.raises(ConfigError, match=r"this GPU has 8\.0"):
        check_supported("fp8", "cuda", TINY_CFG, cuda_capability=(8, 0))
    check_supported("fp8", "cuda", TINY_CFG, cuda_capability=(9, 0))
    check_supported("fp8", "cuda:1", TINY_CFG, cuda_capability=(8, 9))


def test_nf4_needs_dims_divisible_by_32() -> None:
    bad = {**TINY_CFG, "intermediate_size": 100}
    with pytest.raises(ConfigError, match="gate_proj/up_proj=100"):
        check_supported("int4-nf4", "cpu", bad)
    with pytest.raises(ConfigError, match="divisible by 32"):
        check_supported("int4-fp4", "cpu", bad)
    check_supported("int4-nf4", "cpu", TINY_CFG)
    check_supported("int8-bnb", "cpu", bad)  # 8-bit has no such constraint
    assert linear_out_dims(TINY_CFG)["k_proj/v_proj"] == 32


def test_int4_torchao_is_cuda_only() -> None:
    with pytest.raises(ConfigError, match="CUDA only"):
        check_supported("int4-torchao", "cpu")
    check_supported("int4-torchao", "cuda", cuda_capability=(8, 0))


def test_cuda_requested_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        check_supported("fp32", "cuda")


def test_bad_device_string() -> None:
    with pytest.raises(ConfigError, match="device 'gpu0'"):
        check_supported("fp32", "gpu0")


def test_missing_bitsandbytes_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    with pytest.raises(MissingExtra) as info:
        check_supported("int8-bnb", "cpu", TINY_CFG)
    assert "joulebench[quant]" in str(info.value)
    assert "int8-bnb" not in supported_precisions(TINY_CFG, "cpu")


def test_supported_precisions_on_cpu() -> None:
    got = supported_precisions(TINY_CFG, "cpu")
    assert got == ["fp32", "bf16", "fp16", "int8-bnb", "int4-nf4", "int4-fp4", "int8-torchao"]
    on_h100 = supported_precisions(TINY_CFG, "cuda", cuda_capability=(9, 0))
    assert on_h100 == list(PRECISIONS)


def test_hf_quantization_configs_carry_the_knobs() -> None:
    import torch

    assert parse_precision("bf16").hf_quantization_config() is None
    q8 = parse_precision("int8-bnb", llm_int8_threshold=5.0).hf_quantization_config()
    assert q8.load_in_8bit and q8.llm_int8_threshold == 5.0
    q4 = parse_precision("int4-fp4").hf_quantization_config()
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "fp4"
    assert q4.bnb_4bit_compute_dtype == torch.float32 and not q4.bnb_4bit_use_double_quant
    ao = parse_precision("int8-torchao").hf_quantization_config()
    assert type(ao.quant_type).__name__ == "Int8WeightOnlyConfig"
    int4 = parse_precision("int4-torchao", group_size=64).torchao_config()
    assert int4.group_size == 64 and int4.int4_packing_format == "tile_packed_to_4d"
    fp8 = parse_precision("fp8", granularity="per_tensor").torchao_config()
    assert type(fp8.granularity[0]).__name__ == "PerTensor"
    with pytest.raises(ConfigError, match="packing_format must be one of"):
        parse_precision("int4-torchao", packing_format="zigzag")
