"""Load a model for measurement: a hub id, a local directory, a bundled shape or a tiny model.

Every source goes through the same steps: resolve the config, check the precision against it and
the device (an impossible combination fails here, before any weight is read), load the tokenizer
(left padding, a pad token), then the weights, and record what was loaded so each result carries
it. ``shape:<Name>`` builds the study's architectures with random weights (see ``materialize``) and
pairs them with the bundled offline tokenizer; ``tiny[:<arch>[:<size>]]`` builds a cached tiny
model once and then loads it by path like any local model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joulebench.environment import library_versions
from joulebench.errors import ConfigError
from joulebench.extras import require
from joulebench.meters.sync import torch_sync
from joulebench.workloads.hf_compat import no_progress_bars
from joulebench.workloads.materialize import (
    build_shape_model,
    logical_param_count,
    model_memory_bytes,
)
from joulebench.workloads.precision import PrecisionSpec, check_supported, parse_precision
from joulebench.workloads.shapes import shape_config, shape_info
from joulebench.workloads.sources import ModelSource, parse_model_source
from joulebench.workloads.tiny import bundled_tokenizer_path, tiny_model_path

log = logging.getLogger(__name__)

_LIBRARIES = ("torch", "transformers", "accelerate", "tokenizers", "bitsandbytes", "torchao")


@dataclass(slots=True)
class LoadedModel:
    """A model ready to measure, with everything that must be stored alongside its results."""

    model: Any
    tokenizer: Any
    source: str
    name: str
    kind: str
    precision: PrecisionSpec
    device: str
    shape_only: bool
    n_params: int
    load_time_s: float
    memory_bytes: int
    context_length: int
    seed: int = 0
    tokenizer_source: str = ""

    def record(self) -> dict[str, Any]:
        """Model facts stored with each result (name, source, every precision knob, versions)."""
        rec: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "kind": self.kind,
            "model_type": getattr(getattr(self.model, "config", None), "model_type", None),
            "precision": self.precision.to_dict(),
            "non_quantized_dtype": self.precision.dtype,
            "device": self.device,
            "shape_only": self.shape_only,
            "n_params": self.n_params,
            "load_time_s": self.load_time_s,
            "memory_bytes": self.memory_bytes,
            "context_length": self.context_length,
            "tokenizer": self.tokenizer_source or self.source,
            "vocab_size_tokenizer": len(self.tokenizer),
            "libraries": library_versions(_LIBRARIES),
        }
        if self.shape_only:
            rec["seed"] = self.seed
            rec["weights"] = "random (shape-only)"
            rec["note"] = (
                "random weights with the bundled offline tokenizer (ids < model vocab): token "
                "counts come from that tokenizer and output lengths must be forced"
            )
        return rec


def _hub_error(source: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"model '{source}' cannot be fetched from the Hugging Face hub ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else 'no details'}). Without network access, "
        "download it on a connected machine (huggingface-cli download ID --local-dir DIR), copy "
        "DIR here and pass the local path instead; or use shape:<Name> for random weights"
    )


def _load_config(source: str, kind: str) -> Any:
    transformers = require("transformers", "hf", "model loading")
    try:
        return transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if kind == "hub":
            raise _hub_error(source, exc) from exc
        raise ConfigError(f"{source} is not a transformers model directory: {exc}") from exc


def _load_tokenizer(source: str, kind: str) -> Any:
    transformers = require("transformers", "hf", "model loading")
    try:
        return transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as exc:
        if kind == "hub":
            raise _hub_error(source, exc) from exc
        raise ConfigError(
            f"model directory {source} has no usable tokenizer ({exc}); save one next to the "
            "weights with tokenizer.save_pretrained(DIR)"
        ) from exc


def _prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    tokenizer.padding_side = "left"  # decoder-only batches are always left-padded
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("the tokenizer has neither a pad nor an eos token; set one")
        tokenizer.pad_token = tokenizer.eos_token
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id


def _load_weights(source: str, kind: str, spec: PrecisionSpec, device: str) -> Any:
    transformers = require("transformers", "hf", "model loading")
    kwargs: dict[str, Any] = {"dtype": spec.torch_dtype, "device_map": {"": device}}
    quantization_config = spec.hf_quantization_config()
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        with no_progress_bars():
            return transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        if kind == "hub":
            raise _hub_error(source, exc) from exc
        raise ConfigError(f"cannot load weights from {source}: {exc}") from exc


def _location(src: ModelSource) -> str:
    """What transformers loads from: the hub id, the directory, or the (built) tiny model."""
    if src.kind == "tiny":
        return str(tiny_model_path(*src.tiny))
    return src.ref


def load_tokenizer(source: str | ModelSource) -> Any:
    """Only the tokenizer a model source would use (left padding, pad token): no weights."""
    src = parse_model_source(source)
    if src.kind == "shape":
        tokenizer = _load_tokenizer(str(bundled_tokenizer_path()), "local")
    else:
        tokenizer = _load_tokenizer(_location(src), src.kind)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    source: str | ModelSource,
    precision: str | PrecisionSpec = "fp32",
    device: str = "cpu",
    *,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    **precision_overrides: Any,
) -> LoadedModel:
    """Load ``source`` in ``precision`` on ``device``; see the module docstring for the forms."""
    spec = parse_precision(precision, **precision_overrides)
    src = parse_model_source(source)
    kind, name = src.kind, src.name
    torch = require("torch", "hf", "model loading")
    start = clock()
    if kind == "shape":
        config = shape_config(name)
        check_supported(spec, device, config)
        tokenizer_dir = bundled_tokenizer_path()
        tokenizer = _load_tokenizer(str(tokenizer_dir), "local")
        model = build_shape_model(config, spec, device, seed)
        tokenizer_source = "joulebench bundled tokenizer"
        context_length = shape_info(name).context_length
        n_params = shape_info(name).n_params
    else:
        path = _location(src)
        config = _load_config(path, kind)
        check_supported(spec, device, config)
        tokenizer = _load_tokenizer(path, kind)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _load_weights(path, kind, spec, device)
        tokenizer_source = path
        context_length = int(
            getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
        )
        n_params = logical_param_count(model)
    model.eval()
    _prepare_tokenizer(tokenizer, model)
    torch_sync()
    load_time_s = clock() - start
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab and len(tokenizer) > vocab:
        log.warning("tokenizer has %d tokens but the model only %d", len(tokenizer), vocab)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=src.given,
        name=name,
        kind=kind,
        precision=spec,
        device=device,
        shape_only=kind == "shape",
        n_params=int(n_params),
        load_time_s=float(load_time_s),
        memory_bytes=model_memory_bytes(model),
        context_length=context_length,
        seed=seed,
        tokenizer_source=tokenizer_source,
    )
    log.info(
        "loaded %s (%s) in %s on %s: %.2f s, %d bytes",
        name,
        kind,
        spec.name,
        device,
        load_time_s,
        loaded.memory_bytes,
    )
    return loaded
