"""Shape-only models: built on the meta device, materialized layer by layer in the target precision.

No full-precision copy of the model ever exists: each decoder layer is allocated on the target
device in the non-quantized dtype, filled with seeded random values, and (for quantized
precisions) converted to bitsandbytes or torchao layers before the next layer is allocated. The
embeddings, final norm and lm_head stay in the non-quantized dtype, as transformers' quantizers
leave them. Also here: exact memory and parameter counts that see through quantized tensors.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from joulebench.errors import JoulebenchError
from joulebench.extras import require
from joulebench.workloads.precision import PrecisionSpec

log = logging.getLogger(__name__)


def _decoder_layers(model: Any, num_layers: int) -> Any:
    nn = require("torch.nn", "hf")
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise JoulebenchError(f"cannot find the {num_layers} decoder layers of {type(model).__name__}")


def _init_module(model: Any, module: Any, generator: Any, std: float) -> None:
    """Seeded init of one module's own parameters and buffers (non-recursive)."""
    torch = require("torch", "hf")
    nn = torch.nn
    name = type(module).__name__
    with torch.no_grad():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std, generator=generator)
            bias = getattr(module, "bias", None)
            if bias is not None:
                bias.zero_()
        elif "RotaryEmbedding" in name:
            model._init_weights(module)  # recomputes the non-persistent inv_freq buffers
        else:
            for param_name, param in module.named_parameters(recurse=False):
                if "Norm" in name and param_name == "weight":
                    param.fill_(1.0)
                else:
                    param.normal_(0.0, std, generator=generator)
            for _, buf in module.named_buffers(recurse=False):
                buf.zero_()


def _materialize(model: Any, root: Any, device: str, generator: Any, std: float) -> None:
    for module in root.modules():
        on_meta = any(t.is_meta for t in module.parameters(recurse=False)) or any(
            t.is_meta for t in module.buffers(recurse=False)
        )
        if on_meta:
            module.to_empty(device=device, recurse=False)
            _init_module(model, module, generator, std)


def _bnb_linear(linear: Any, spec: PrecisionSpec, device: str) -> Any:
    torch = require("torch", "hf")
    bnb = require("bitsandbytes", "quant", f"precision {spec.name}")
    weight = linear.weight.data.to(torch.float16 if spec.name == "int8-bnb" else spec.torch_dtype)
    has_bias = linear.bias is not None
    if spec.name == "int8-bnb":
        threshold = float(spec.knobs["llm_int8_threshold"])
        new = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            has_fp16_weights=False,
            threshold=threshold,
            device="meta",
        )
        # bitsandbytes quantizes Int8Params when they move from the CPU (as transformers does).
        param = bnb.nn.Int8Params(weight.to("cpu"), requires_grad=False, has_fp16_weights=False)
        new.weight = param.to(device)
    else:
        storage = getattr(torch, str(spec.knobs["quant_storage"]))
        new = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            compute_dtype=getattr(torch, spec.compute_dtype),
            compress_statistics=bool(spec.knobs["double_quant"]),
            quant_type=str(spec.knobs["quant_type"]),
            quant_storage=storage,
            device="meta",
        )
        param = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            compress_statistics=bool(spec.knobs["double_quant"]),
            quant_type=str(spec.knobs["quant_type"]),
            quant_storage=storage,
            module=new,
        )
        new.weight = param.to(device)
    if has_bias:
        new.bias = torch.nn.Parameter(linear.bias.data.to(device), requires_grad=False)
    return new


def _quantize_layer(layer: Any, spec: PrecisionSpec, device: str) -> None:
    if spec.backend == "torchao":
        quantization = require("torchao.quantization", "quant", f"precision {spec.name}")
        quantization.quantize_(layer, spec.torchao_config())
        return
    nn = require("torch.nn", "hf")
    for parent in list(layer.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, child_name, _bnb_linear(child, spec, device))


def build_shape_model(config: Any, spec: PrecisionSpec, device: str, seed: int = 0) -> Any:
    """A randomly initialized model of ``config`` directly in ``spec`` on ``device``."""
    torch = require("torch", "hf", "shape-only models")
    transformers = require("transformers", "hf", "shape-only models")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=spec.torch_dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    std = float(getattr(config, "initializer_range", 0.02) or 0.02)
    layers = _decoder_layers(model, int(config.num_hidden_layers))
    for index, layer in enumerate(layers):
        _materialize(model, layer, device, generator, std)
        if spec.quantized:
            _quantize_layer(layer, spec, device)
        log.debug("materialized layer %d/%d", index + 1, len(layers))
    _materialize(model, model, device, generator, std)  # embeddings, norm, lm_head, rotary
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise JoulebenchError(f"shape-only build left tensors on meta: {leftovers[:5]}")
    return model


def tensor_nbytes(tensor: Any) -> int:
    """Bytes actually held by ``tensor``, seeing through torchao subclasses and bnb quant states."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor).__name__ not in {"Parameter", "Tensor"}:
        try:
            names, _ = flatten()
        except Exception:
            names = []
        if names:
            return sum(tensor_nbytes(getattr(tensor, name)) for name in names)
    total = int(tensor.numel()) * int(tensor.element_size())
    state = getattr(tensor, "quant_state", None)
    if state is not None:
        for field in ("absmax", "code"):
            value = getattr(state, field, None)
            if value is not None and hasattr(value, "numel"):
                total += int(value.numel()) * int(value.element_size())
        nested = getattr(state, "state2", None)
        if nested is not None and getattr(nested, "absmax", None) is not None:
            total += int(nested.absmax.numel()) * int(nested.absmax.element_size())
    scb = getattr(tensor, "SCB", None)
    if scb is not None:
        total += int(scb.numel()) * int(scb.element_size())
    return total


def model_memory_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor_nbytes(tensor)
    return total


def logical_param_count(model: Any) -> int:
    """Parameters as the unquantized model has them (4-bit packed weights unpacked)."""
    total = 0
    for param in model.parameters():  # shared (tied) parameters are yielded once
        state = getattr(param, "quant_state", None)
        shape = getattr(state, "shape", None)
        total += math.prod(shape) if shape is not None else int(param.numel())
    return total
