"""Precisions: every knob explicit, and impossible combinations refused before weights load.

The study loaded its models with bitsandbytes defaults, so its "int8" was LLM.int8 with the
outlier threshold 6.0 and its "int4" was FP4 with float32 compute. joulebench names each variant
and records every knob (including the dtype of the layers that are *not* quantized) with each
result, so a figure can always be traced back to what was actually run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joulebench.errors import ConfigError, JoulebenchError, MissingExtra, UnknownName
from joulebench.extras import require

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = (
    "fp32",
    "bf16",
    "fp16",
    "int8-bnb",
    "int4-nf4",
    "int4-fp4",
    "int8-torchao",
    "int4-torchao",
    "fp8",
)

_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "int8": "int8-bnb",
    "nf4": "int4-nf4",
    "fp4": "int4-fp4",
    "float8": "fp8",
}

#: Bits per stored element, by short format name: the float dtypes and the quantized weight
#: formats (quantization scales and zero points ignored, < 3 % of the weights). The one table of
#: sizes: model memory estimates and the roofline both read it through :class:`PrecisionSpec`.
BITS: dict[str, int] = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "int4": 4}

#: Full dtype name (as torch and transformers configs spell it) → short name.
_SHORT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

#: Every accepted spelling of a float dtype → its full name.
_DTYPES = {
    **{full: full for full in _SHORT_DTYPES},
    **{short: full for full, short in _SHORT_DTYPES.items()},
    "float": "float32",
    "half": "float16",
}


def short_dtype(dtype: Any) -> str | None:
    """``torch.bfloat16`` / ``"bfloat16"`` / ``"bf16"`` → ``"bf16"``; None for anything else."""
    if dtype is None:
        return None
    full = _DTYPES.get(str(dtype).removeprefix("torch.").lower())
    return _SHORT_DTYPES[full] if full else None


#: Compute capability from which torchao float8 matmuls run (Ada Lovelace / Hopper and newer).
FP8_MIN_CAPABILITY = (8, 9)
#: bitsandbytes 4-bit layers need every quantized linear's output dimension divisible by this.
NF4_DIM_MULTIPLE = 32

# name -> (backend, weight format, default knobs). "dtype" is the dtype of every layer that is not
# quantized (embeddings, norms, lm_head) and of the activations unless a compute dtype says more.
_DEFAULTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "fp32": ("torch", "float32", {"dtype": "float32"}),
    "bf16": ("torch", "bfloat16", {"dtype": "bfloat16"}),
    "fp16": ("torch", "float16", {"dtype": "float16"}),
    # transformers forces float16 for the non-quantized layers of bitsandbytes models by default.
    "int8-bnb": (
        "bitsandbytes",
        "int8 (LLM.int8)",
        {"dtype": "float16", "compute_dtype": "float16", "llm_int8_threshold": 6.0},
    ),
    # The QLoRA recipe: NF4 weights, double quantization, bfloat16 compute.
    "int4-nf4": (
        "bitsandbytes",
        "nf4",
        {
            "dtype": "bfloat16",
            "compute_dtype": "bfloat16",
            "quant_type": "nf4",
            "double_quant": True,
            "quant_storage": "uint8",
        },
    ),
    # The study's "int4": bitsandbytes defaults, i.e. FP4 with float32 compute, no double quant.
    "int4-fp4": (
        "bitsandbytes",
        "fp4",
        {
            "dtype": "float16",
            "compute_dtype": "float32",
            "quant_type": "fp4",
            "double_quant": False,
            "quant_storage": "uint8",
        },
    ),
    "int8-torchao": (
        "torchao",
        "int8 weight-only",
        {"dtype": "bfloat16", "compute_dtype": "bfloat16", "config": "Int8WeightOnlyConfig"},
    ),
    "int4-torchao": (
        "torchao",
        "int4 weight-only",
        {
            "dtype": "bfloat16",
            "compute_dtype": "bfloat16",
            "config": "Int4WeightOnlyConfig",
            "group_size": 128,
            "packing_format": "tile_packed_to_4d",
        },
    ),
    "fp8": (
        "torchao",
        "float8 e4m3 (dynamic activations)",
        {
            "dtype": "bfloat16",
            "compute_dtype": "bfloat16",
            "config": "Float8DynamicActivationFloat8WeightConfig",
            "granularity": "per_row",
        },
    ),
}

#: How each quantized precision stores its quantized weights (a key of :data:`BITS`), and whether
#: its matmuls run in that format (LLM.int8's int8 matmuls, float8's scaled matmuls) instead of
#: dequantizing to the compute dtype first (weight-only quantization).
_QUANTIZED: dict[str, tuple[str, bool]] = {
    "int8-bnb": ("int8", True),
    "int4-nf4": ("int4", False),
    "int4-fp4": ("int4", False),
    "int8-torchao": ("int8", False),
    "int4-torchao": ("int4", False),
    "fp8": ("fp8", True),
}

_OVERRIDABLE = {
    "fp32": set(),
    "bf16": set(),
    "fp16": set(),
    "int8-bnb": {"dtype", "llm_int8_threshold"},
    "int4-nf4": {"dtype", "compute_dtype", "double_quant", "quant_storage"},
    "int4-fp4": {"dtype", "compute_dtype", "double_quant", "quant_storage"},
    "int8-torchao": {"dtype"},
    "int4-torchao": {"dtype", "group_size", "packing_format"},
    "fp8": {"dtype", "granularity"},
}


@dataclass(frozen=True, slots=True)
class PrecisionSpec:
    """One precision with all of its knobs; ``knobs["dtype"]`` is the non-quantized layer dtype."""

    name: str
    backend: str  # "torch" | "bitsandbytes" | "torchao"
    weight_format: str
    knobs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return self.backend != "torch"

    @property
    def dtype(self) -> str:
        """Dtype of the layers that are not quantized (embeddings, norms, lm_head)."""
        return str(self.knobs["dtype"])

    @property
    def compute_dtype(self) -> str:
        return str(self.knobs.get("compute_dtype", self.knobs["dtype"]))

    @property
    def weight_kind(self) -> str:
        """Short name of how the weights are stored: ``int4``, ``int8``, ``fp8`` (the quantized
        linears) or the dtype (``fp32``, ``bf16``, ``fp16``) when nothing is quantized."""
        if self.name in _QUANTIZED:
            return _QUANTIZED[self.name][0]
        return _SHORT_DTYPES[self.dtype]

    @property
    def weight_bits(self) -> int:
        """Bits per weight of the quantized linears (of every weight when unquantized)."""
        return BITS[self.weight_kind]

    @property
    def dtype_bits(self) -> int:
        """Bits per element of the layers that are not quantized."""
        return BITS[_SHORT_DTYPES[self.dtype]]

    @property
    def peak_dtype(self) -> str:
        """The short dtype whose peak throughput bounds the matmuls: ``int8`` for LLM.int8,
        ``fp8`` for float8, otherwise the compute dtype (weight-only formats dequantize)."""
        if _QUANTIZED.get(self.name, ("", False))[1]:
            return self.weight_kind
        return _SHORT_DTYPES[self.compute_dtype]

    @property
    def torch_dtype(self) -> Any:
        torch = require("torch", "hf", "model precisions")
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "weight_format": self.weight_format,
            "dtype": self.dtype,
            "compute_dtype": self.compute_dtype,
            "knobs": dict(self.knobs),
        }

    def torchao_config(self) -> Any:
        """The torchao ``AOBaseConfig`` this precision quantizes linears with."""
        if self.backend != "torchao":
            raise ConfigError(f"precision '{self.name}' is not a torchao precision")
        tq = require("torchao.quantization", "quant", f"precision {self.name}")
        if self.name == "int8-torchao":
            return tq.Int8WeightOnlyConfig()
        if self.name == "int4-torchao":
            return tq.Int4WeightOnlyConfig(
                group_size=int(self.knobs["group_size"]),
                int4_packing_format=str(self.knobs["packing_format"]),
            )
        granularity = tq.PerRow() if self.knobs["granularity"] == "per_row" else tq.PerTensor()
        return tq.Float8DynamicActivationFloat8WeightConfig(granularity=granularity)

    def hf_quantization_config(self) -> Any:
        """The transformers ``quantization_config`` for ``from_pretrained`` (None when unquantized)."""
        if not self.quantized:
            return None
        transformers = require("transformers", "hf", "quantized loading")
        torch = require("torch", "hf")
        if self.name == "int8-bnb":
            return transformers.BitsAndBytesConfig(
                load_in_8bit=True, llm_int8_threshold=float(self.knobs["llm_int8_threshold"])
            )
        if self.backend == "bitsandbytes":
            return transformers.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=str(self.knobs["quant_type"]),
                bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype),
                bnb_4bit_use_double_quant=bool(self.knobs["double_quant"]),
                bnb_4bit_quant_storage=getattr(torch, str(self.knobs["quant_storage"])),
            )
        return transformers.TorchAoConfig(self.torchao_config())


def _check_override(name: str, key: str, value: Any) -> Any:
    if key in {"dtype", "compute_dtype"}:
        if str(value).lower() not in _DTYPES:
            raise ConfigError(
                f"precision {name}: {key}={value!r} is not a dtype; use float32, bfloat16 or float16"
            )
        return _DTYPES[str(value).lower()]
    if key == "llm_int8_threshold":
        try:
            threshold = float(value)
        except (TypeError, ValueError):
            threshold = -1.0
        if threshold <= 0:
            raise ConfigError(f"precision {name}: llm_int8_threshold must be > 0, got {value!r}")
        return threshold
    if key == "double_quant":
        if not isinstance(value, bool):
            raise ConfigError(f"precision {name}: double_quant must be true or false")
        return value
    if key == "quant_storage":
        if value not in {"uint8", "bfloat16", "float16", "float32"}:
            raise ConfigError(
                f"precision {name}: quant_storage must be uint8, bfloat16, float16 or float32"
            )
        return value
    if key == "group_size":
        if value not in (32, 64, 128, 256):
            raise ConfigError(f"precision {name}: group_size must be 32, 64, 128 or 256")
        return int(value)
    if key == "packing_format":
        formats = ("tile_packed_to_4d", "plain", "plain_int32", "preshuffled")
        if value not in formats:
            raise ConfigError(
                f"precision {name}: packing_format must be one of {', '.join(formats)}"
            )
        return value
    if key == "granularity":
        if value not in ("per_row", "per_tensor"):
            raise ConfigError(f"precision {name}: granularity must be per_row or per_tensor")
        return value
    return value


def parse_precision(name: str | PrecisionSpec, **overrides: Any) -> PrecisionSpec:
    """Resolve a precision name (or alias) and apply knob overrides, validating both."""
    if isinstance(name, PrecisionSpec):
        if not overrides:
            return name
        return parse_precision(name.name, **{**dict(name.knobs), **overrides})
    key = str(name).strip().lower()
    if key == "int4":
        raise ConfigError(
            "precision 'int4' is ambiguous: the study's int4 was bitsandbytes FP4 with float32 "
            "compute ('int4-fp4'); choose int4-fp4, int4-nf4 or int4-torchao"
        )
    key = _ALIASES.get(key, key)
    if key not in _DEFAULTS:
        raise UnknownName("precision", str(name), list(PRECISIONS))
    backend, weight_format, defaults = _DEFAULTS[key]
    knobs = dict(defaults)
    for k, v in overrides.items():
        if k in knobs and knobs[k] == v:
            continue
        if k not in _OVERRIDABLE[key]:
            allowed = ", ".join(sorted(_OVERRIDABLE[key])) or "none"
            raise ConfigError(f"precision {key} has no settable knob '{k}'; settable: {allowed}")
        knobs[k] = _check_override(key, k, v)
    return PrecisionSpec(name=key, backend=backend, weight_format=weight_format, knobs=knobs)


def _config_get(config: Any, key: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def linear_out_dims(config: Any) -> dict[str, int]:
    """Output dimension of each kind of linear layer that a quantizer converts (lm_head excluded)."""
    hidden = int(_config_get(config, "hidden_size"))
    heads = int(_config_get(config, "num_attention_heads"))
    kv_heads = int(_config_get(config, "num_key_value_heads", heads) or heads)
    head_dim = int(_config_get(config, "head_dim", None) or hidden // heads)
    return {
        "q_proj": heads * head_dim,
        "k_proj/v_proj": kv_heads * head_dim,
        "o_proj": hidden,
        "gate_proj/up_proj": int(_config_get(config, "intermediate_size")),
        "down_proj": hidden,
    }


def _parse_device(device: str) -> tuple[str, int | None]:
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind not in {"cpu", "cuda", "mps", "xpu"} or (index and not index.isdigit()):
        raise ConfigError(f"device '{device}' is not understood; use cpu, cuda, cuda:N or mps")
    return kind, int(index) if index else None


def _cuda_capability(index: int | None) -> tuple[int, int] | None:
    torch = require("torch", "hf")
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(index or 0)
    return int(major), int(minor)


def _problem(
    spec: PrecisionSpec,
    device: str,
    config: Any,
    cuda_capability: tuple[int, int] | None,
) -> JoulebenchError | None:
    kind, index = _parse_device(device)
    if kind == "cuda" and cuda_capability is None:
        cuda_capability = _cuda_capability(index)
        if cuda_capability is None:
            return ConfigError(f"device '{device}' was asked for but CUDA is not available here")
    if spec.backend == "bitsandbytes":
        if kind not in {"cpu", "cuda", "xpu"}:
            return ConfigError(f"{spec.name}: bitsandbytes does not run on '{kind}'")
        try:
            require("bitsandbytes", "quant", f"precision {spec.name}")
        except MissingExtra as exc:
            return exc
    if spec.backend == "torchao":
        try:
            require("torchao", "quant", f"precision {spec.name}")
        except MissingExtra as exc:
            return exc
        if spec.name == "int4-torchao" and kind != "cuda":
            return ConfigError(
                "int4-torchao: torchao's int4 weight-only kernels (tinygemm) run on CUDA only, "
                f"not on '{kind}'"
            )
    if spec.name == "fp8":
        if kind != "cuda":
            return ConfigError(
                f"fp8 needs a CUDA GPU with compute capability >= "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} (Ada/Hopper or newer), "
                f"not '{kind}'"
            )
        if cuda_capability is not None and tuple(cuda_capability) < FP8_MIN_CAPABILITY:
            return ConfigError(
                f"fp8 needs compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
                f"(Ada/Hopper or newer); this GPU has {cuda_capability[0]}.{cuda_capability[1]}"
            )
    if spec.name in {"int4-nf4", "int4-fp4"} and config is not None:
        bad = {k: v for k, v in linear_out_dims(config).items() if v % NF4_DIM_MULTIPLE}
        if bad:
            dims = ", ".join(f"{k}={v}" for k, v in bad.items())
            return ConfigError(
                f"{spec.name}: bitsandbytes 4-bit needs every linear output dimension divisible "
                f"by {NF4_DIM_MULTIPLE}; this model has {dims}"
            )
    return None


def check_supported(
    spec: PrecisionSpec | str,
    device: str = "cpu",
    config: Any = None,
    *,
    cuda_capability: tuple[int, int] | None = None,
) -> None:
    """Raise (before any weight is loaded) if ``spec`` cannot run on ``device`` for ``config``.

    ``config`` is a transformers config or a dict with the usual keys; None skips shape checks.
    ``cuda_capability`` overrides the probe (tests, planning for another machine). The error
    names the reason and the precisions that would work instead.
    """
    spec = parse_precision(spec)
    problem = _problem(spec, device, config, cuda_capability)
    if problem is None:
        return
    others = [
        p
        for p in PRECISIONS
        if p != spec.name and _problem(parse_precision(p), device, config, cuda_capability) is None
    ]
    hint = f"; alternatives on {device}: {', '.join(others)}" if others else ""
    if isinstance(problem, MissingExtra):
        raise MissingExtra(problem.module, problem.extra, f"precision {spec.name}{hint}")
    raise ConfigError(f"{problem}{hint}")


def supported_precisions(
    config: Any = None,
    device: str = "cpu",
    *,
    cuda_capability: tuple[int, int] | None = None,
) -> list[str]:
    """The precisions in :data:`PRECISIONS` that can run ``config`` on ``device``."""
    return [
        p
        for p in PRECISIONS
        if _problem(parse_precision(p), device, config, cuda_capability) is None
    ]
