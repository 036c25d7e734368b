from __future__ import annotations

import pytest

from joulebench.workloads.materialize import (
    build_shape_model,
    logical_param_count,
    model_memory_bytes,
)
from joulebench.workloads.precision import parse_precision
from joulebench.workloads.shapes import count_parameters

torch = pytest.importorskip("torch")

CPU_PRECISIONS = ["fp32", "bf16", "fp16", "int8-bnb", "int4-nf4", "int4-fp4", "int8-torchao"]


@pytest.fixture(scope="module")
def qwen_config(joulebench_cache):
    """A tiny qwen2 config (tied embeddings, attention biases) standing in for a bundled shape."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        "qwen2",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )


@pytest.fixture(scope="module")
def built(qwen_config):
    return {
        p: build_shape_model(qwen_config, parse_precision(p), "cpu", seed=7) for p in CPU_PRECISIONS
    }


@pytest.mark.parametrize("precision", CPU_PRECISIONS)
def test_shape_model_is_materialized_in_precision(built, qwen_config, precision: str) -> None:
    model = built[precision]
    spec = parse_precision(precision)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.model.embed_tokens.weight.dtype == spec.torch_dtype  # non-quantized layers
    assert model.lm_head.weight is model.model.embed_tokens.weight  # ties survive
    assert logical_param_count(model) == count_parameters(qwen_config)
    proj = model.model.layers[0].mlp.up_proj
    expected = {
        "int8-bnb": "Linear8bitLt",
        "int4-nf4": "Linear4bit",
        "int4-fp4": "Linear4bit",
    }.get(precision, "Linear")
    assert type(proj).__name__ == expected
    if precision == "int8-torchao":
        assert (
            type(proj.weight).__name__ != "Parameter" or type(proj.weight.data).__name__ != "Tensor"
        )
    inv_freq = model.model.rotary_emb.inv_freq
    assert torch.isfinite(inv_freq).all() and inv_freq[0] == 1.0  # recomputed, not garbage
    x = torch.randint(0, 1024, (2, 6))
    with torch.no_grad():
        logits = model(x).logits
    assert torch.isfinite(logits.float()).all() and logits.shape == (2, 6, 1024)


def test_seeded_and_deterministic(qwen_config, built) -> None:
    again = build_shape_model(qwen_config, parse_precision("int4-nf4"), "cpu", seed=7)
    other = build_shape_model(qwen_config, parse_precision("bf16"), "cpu", seed=8)
    x = torch.randint(0, 1024, (1, 5))
    with torch.no_grad():
        assert torch.equal(again(x).logits, built["int4-nf4"](x).logits)
        assert not torch.equal(other(x).logits, built["bf16"](x).logits)
    w = built["fp32"].model.layers[0].self_attn.q_proj.weight
    assert abs(float(w.detach().std()) - 0.02) < 0.004  # initializer_range
    norm = built["fp32"].model.layers[0].input_layernorm.weight
    assert torch.equal(norm, torch.ones_like(norm))


def test_memory_reflects_precision(built) -> None:
    mem = {p: model_memory_bytes(m) for p, m in built.items()}

    def buffers(p: str) -> int:
        return sum(b.numel() * b.element_size() for b in built[p].buffers())

    assert mem["fp32"] - buffers("fp32") == 2 * (mem["bf16"] - buffers("bf16"))
    assert mem["bf16"] == mem["fp16"]
    assert mem["bf16"] > mem["int8-torchao"] and mem["fp16"] > mem["int8-bnb"]
    assert mem["int8-bnb"] > mem["int4-fp4"]
    # fp32: every parameter at 4 bytes plus the two rotary buffers
    n = logical_param_count(built["fp32"])
    assert mem["fp32"] - 4 * n == sum(b.numel() * 4 for b in built["fp32"].buffers())
