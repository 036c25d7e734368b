"""The study's architectures as bundled configs: shapes without weights.

Energy and latency depend on shapes and token counts, not on weight values, so a model built from
one of these configs with random weights costs what the real one costs. The configs are the
published ``config.json`` values (``src/joulebench/data/shapes/*.json``), with a ``_joulebench``
block holding the hub id and the published parameter count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from joulebench.errors import ConfigError, UnknownName
from joulebench.extras import require

SHAPES: tuple[str, ...] = (
    "Qwen2.5-0.5B-Instruct",
    "Qwen2.5-1.5B-Instruct",
    "Qwen2.5-3B-Instruct",
    "Qwen2.5-7B-Instruct",
    "Qwen2.5-14B-Instruct",
    "Mistral-7B-Instruct-v0.3",
    "Llama-3.1-8B-Instruct",
    "Llama-3.1-70B-Instruct",
)

_META_KEY = "_joulebench"


@dataclass(frozen=True, slots=True)
class ShapeInfo:
    """A bundled shape: its names, the published size and the config values that matter."""

    name: str
    hf_id: str
    model_type: str
    published_params: float
    n_params: int
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    context_length: int

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


def resolve_shape(name: str) -> str:
    """Canonical shape name for ``name`` (case-insensitive; the hub id is accepted too)."""
    key = name.strip().lower()
    for shape in SHAPES:
        if key == shape.lower() or key == _raw(shape)[_META_KEY]["hf_id"].lower():
            return shape
    raise UnknownName("model shape", name, list(SHAPES))


@cache
def _raw(shape: str) -> dict[str, Any]:
    path = resources.files("joulebench.data") / "shapes" / f"{shape}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:  # a broken install, not user input
        raise ConfigError(f"bundled shape file for {shape} is missing from the package") from exc


def shape_dict(name: str) -> dict[str, Any]:
    """The published config values of a shape, as a plain dict (no joulebench metadata)."""
    raw = _raw(resolve_shape(name))
    return {k: v for k, v in raw.items() if k != _META_KEY}


def shape_config(name: str) -> Any:
    """A transformers ``PretrainedConfig`` for the shape."""
    transformers = require("transformers", "hf", "shape-only models")
    values = shape_dict(name)
    model_type = values.pop("model_type")
    values.pop("architectures", None)
    config = transformers.AutoConfig.for_model(model_type, **values)
    config.architectures = _raw(resolve_shape(name))["architectures"]
    return config


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        value = config.get(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def count_parameters(config: Any) -> int:
    """Parameters of a Llama-family decoder (llama, mistral, qwen2) from its config, by arithmetic.

    Tied input/output embeddings are counted once, as in the published sizes.
    """
    model_type = _get(config, "model_type", "")
    if model_type not in {"llama", "mistral", "qwen2"}:
        raise ConfigError(
            f"cannot count parameters of model_type '{model_type}'; known: llama, mistral, qwen2"
        )
    hidden = int(_get(config, "hidden_size"))
    inter = int(_get(config, "intermediate_size"))
    layers = int(_get(config, "num_hidden_layers"))
    heads = int(_get(config, "num_attention_heads"))
    kv_heads = int(_get(config, "num_key_value_heads", heads))
    head_dim = int(_get(config, "head_dim", hidden // heads))
    vocab = int(_get(config, "vocab_size"))
    qkv_bias = model_type == "qwen2" or bool(_get(config, "attention_bias", False))
    o_bias = model_type != "qwen2" and bool(_get(config, "attention_bias", False))
    mlp_bias = bool(_get(config, "mlp_bias", False))

    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    attn = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    attn += (q_out + 2 * kv_out) * qkv_bias + hidden * o_bias
    mlp = 3 * hidden * inter + (2 * inter + hidden) * mlp_bias
    per_layer = attn + mlp + 2 * hidden  # two RMSNorms
    embed = vocab * hidden
    lm_head = 0 if bool(_get(config, "tie_word_embeddings", False)) else vocab * hidden
    return embed + layers * per_layer + hidden + lm_head


def shape_info(name: str) -> ShapeInfo:
    shape = resolve_shape(name)
    raw = _raw(shape)
    meta = raw[_META_KEY]
    heads = int(raw["num_attention_heads"])
    return ShapeInfo(
        name=shape,
        hf_id=meta["hf_id"],
        model_type=raw["model_type"],
        published_params=float(meta["published_params"]),
        n_params=count_parameters(raw),
        num_layers=int(raw["num_hidden_layers"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_attention_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads", heads)),
        vocab_size=int(raw["vocab_size"]),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        context_length=int(raw["max_position_embeddings"]),
    )


def weight_bytes(config: Any, precision: Any) -> int:
    """Approximate bytes of the weights of ``config`` in ``precision`` (scales excluded).

    Quantized precisions quantize the decoder linears only; embeddings, norms and lm_head stay in
    the non-quantized dtype, as with transformers' quantizers.
    """
    from joulebench.workloads.precision import parse_precision

    spec = parse_precision(precision)
    total = count_parameters(config)
    hidden, vocab = int(_get(config, "hidden_size")), int(_get(config, "vocab_size"))
    tied = bool(_get(config, "tie_word_embeddings", False))
    layers = int(_get(config, "num_hidden_layers"))
    unquantized = vocab * hidden * (1 if tied else 2) + hidden * (2 * layers + 1)
    if not spec.quantized:
        return total * spec.dtype_bits // 8
    return (unquantized * spec.dtype_bits + (total - unquantized) * spec.weight_bits) // 8
