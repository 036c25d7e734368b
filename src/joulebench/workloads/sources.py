"""Model sources: what a model string names, decided once.

A model is given as a string in four forms: a Hugging Face hub id (``Qwen/Qwen2.5-0.5B-Instruct``),
a local directory holding ``config.json``, ``shape:<Name>`` (one of the study's architectures with
random weights; the hub id of the shape is accepted as its name) or ``tiny[:<arch>[:<size>]]`` (a
tiny real model built once and cached). :func:`parse_model_source` tells them apart and checks
the parts that can be checked without loading anything (the shape is bundled, the tiny
architecture and size exist, the directory exists); loaders, plans and sweeps take the parsed
:class:`ModelSource` instead of classifying the string again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from joulebench.errors import ConfigError
from joulebench.workloads.shapes import resolve_shape
from joulebench.workloads.tiny import TINY_ARCHS, TINY_SIZES

MODEL_KINDS = ("hub", "local", "shape", "tiny")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A classified model source.

    ``ref`` is what the kind needs to find the model: the hub id, the (user-expanded) directory,
    the canonical shape name, or ``<arch>:<size>`` for a tiny model (see :attr:`tiny`).
    """

    given: str
    kind: str  # one of MODEL_KINDS
    ref: str

    @property
    def name(self) -> str:
        """The model's name in results: the shape, ``tiny-<arch>-<size>``, the directory's
        name or the hub id."""
        if self.kind == "tiny":
            return "tiny-" + "-".join(self.tiny)
        if self.kind == "local":
            return Path(self.ref).name
        return self.ref

    @property
    def tiny(self) -> tuple[str, str]:
        """(architecture, size) of a tiny model."""
        if self.kind != "tiny":
            raise ConfigError(f"model source '{self.given}' is not a tiny model")
        arch, _, size = self.ref.partition(":")
        return arch, size


def _parse_tiny(text: str) -> str:
    parts = text.split(":")
    if len(parts) > 3:
        raise ConfigError(f"'{text}': use tiny, tiny:<arch> or tiny:<arch>:<size>")
    arch = parts[1] if len(parts) > 1 and parts[1] else "llama"
    size = parts[2] if len(parts) > 2 and parts[2] else "tiny"
    if arch.lower() not in TINY_ARCHS or size.lower() not in TINY_SIZES:
        raise ConfigError(
            f"'{text}': architecture must be one of {', '.join(TINY_ARCHS)} and size one of "
            f"{', '.join(TINY_SIZES)}"
        )
    return f"{arch.lower()}:{size.lower()}"


def parse_model_source(source: str | ModelSource) -> ModelSource:
    """Classify ``source`` (see the module docstring); errors say what to give instead."""
    if isinstance(source, ModelSource):
        return source
    text = str(source).strip()
    if not text:
        raise ConfigError("model source is empty; give a hub id, a directory, shape:<Name> or tiny")
    lowered = text.lower()
    if lowered.startswith("shape:"):
        return ModelSource(source, "shape", resolve_shape(text.split(":", 1)[1]))
    if lowered == "tiny" or lowered.startswith("tiny:"):
        return ModelSource(source, "tiny", _parse_tiny(text))
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(
                f"model path {path} is a file; pass the directory holding config.json"
            )
        return ModelSource(source, "local", str(path))
    if text.startswith(("/", "./", "../", "~")) or text.count("/") > 1:
        raise ConfigError(f"model directory {path} does not exist")
    return ModelSource(source, "hub", text)
