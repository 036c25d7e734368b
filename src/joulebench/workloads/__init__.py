"""Workloads: models (hub, local, shape-only, tiny), precisions and prompt sets.

Importing this package does not import torch; loading a model does.
"""

from __future__ import annotations

from joulebench.workloads.models import LoadedModel, load_model, load_tokenizer
from joulebench.workloads.output_length import OutputLength
from joulebench.workloads.precision import (
    PRECISIONS,
    PrecisionSpec,
    check_supported,
    parse_precision,
    supported_precisions,
)
from joulebench.workloads.prompt_set import EncodedPrompt, Prompt, PromptSet
from joulebench.workloads.prompts import load_prompts
from joulebench.workloads.shapes import SHAPES, count_parameters
from joulebench.workloads.sources import ModelSource, parse_model_source
from joulebench.workloads.tiny import make_tiny, tiny_model_path

__all__ = [
    "PRECISIONS",
    "SHAPES",
    "EncodedPrompt",
    "LoadedModel",
    "ModelSource",
    "OutputLength",
    "PrecisionSpec",
    "Prompt",
    "PromptSet",
    "check_supported",
    "count_parameters",
    "load_model",
    "load_prompts",
    "load_tokenizer",
    "make_tiny",
    "parse_model_source",
    "parse_precision",
    "supported_precisions",
    "tiny_model_path",
]
