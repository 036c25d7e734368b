from __future__ import annotations

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.workloads.shapes import (
    SHAPES,
    count_parameters,
    resolve_shape,
    shape_config,
    shape_dict,
    shape_info,
    weight_bytes,
)

PUBLISHED = {
    "Qwen2.5-0.5B-Instruct": 0.49e9,
    "Qwen2.5-1.5B-Instruct": 1.54e9,
    "Qwen2.5-3B-Instruct": 3.09e9,
    "Qwen2.5-7B-Instruct": 7.62e9,
    "Qwen2.5-14B-Instruct": 14.7e9,
    "Mistral-7B-Instruct-v0.3": 7.25e9,
    "Llama-3.1-8B-Instruct": 8.03e9,
    "Llama-3.1-70B-Instruct": 70.6e9,
}


def test_bundled_shapes_are_the_studys() -> None:
    assert set(SHAPES) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_within_one_percent(name: str) -> None:
    n = count_parameters(shape_dict(name))
    assert abs(n / PUBLISHED[name] - 1) < 0.01, (name, n)
    assert shape_info(name).published_params == PUBLISHED[name]


@pytest.mark.parametrize(
    "name", ["Qwen2.5-0.5B-Instruct", "Mistral-7B-Instruct-v0.3", "Llama-3.1-70B-Instruct"]
)
def test_meta_model_matches_arithmetic(name: str) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    config = shape_config(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config)
    layer = model.model.layers[0]
    assert layer.self_attn.k_proj.out_features == config.num_key_value_heads * (
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )
    assert len(model.model.layers) == config.num_hidden_layers


def test_tied_embeddings_matter() -> None:
    small = shape_dict("Qwen2.5-0.5B-Instruct")
    untied = {**small, "tie_word_embeddings": False}
    diff = count_parameters(untied) - count_parameters(small)
    assert diff == small["vocab_size"] * small["hidden_size"]


def test_llama_rope_scaling_survives() -> None:
    config = shape_config("llama-3.1-8b-instruct")
    assert config.rope_parameters["rope_type"] == "llama3"
    assert config.rope_parameters["rope_theta"] == 500000.0


def test_resolve_is_case_insensitive_and_takes_hub_ids() -> None:
    assert resolve_shape("qwen2.5-0.5b-INSTRUCT") == "Qwen2.5-0.5B-Instruct"
    assert resolve_shape("meta-llama/Llama-3.1-8B-Instruct") == "Llama-3.1-8B-Instruct"
    with pytest.raises(UnknownName) as info:
        resolve_shape("gpt-5")
    assert "Mistral-7B-Instruct-v0.3" in str(info.value)


def test_count_parameters_rejects_unknown_architectures() -> None:
    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        count_parameters({"model_type": "gpt2"})


def test_weight_bytes_order() -> None:
    cfg = shape_dict("Llama-3.1-8B-Instruct")
    sizes = [weight_bytes(cfg, p) for p in ("fp32", "bf16", "int8-bnb", "int4-nf4")]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 4 * count_parameters(cfg)
    # embeddings and lm_head stay in 16 bits: int4 is well above a quarter of bf16
    assert sizes[3] > sizes[1] / 4
