"""Edge validation: what the server refuses before a request reaches the engine.

Python's ``json`` parser accepts ``NaN``, ``Infinity`` and lone UTF-16 surrogates (``"\\ud800"``),
none of which is JSON a tokenizer or a sampler can use, so :func:`parse_json` refuses them at
parse time. The limits here are the protocol's own (OpenAI and TGI allow four stop sequences;
a seed is a 64-bit integer, as ``torch.Generator.manual_seed`` takes it).
"""

from __future__ import annotations

import json
from typing import Any

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 512
SEED_MIN = -(2**63)
SEED_MAX = 2**64 - 1
MAX_TOKENS_FIELD = 2**31 - 1  # larger than any context: the engine states the real limit
MIN_TEMPERATURE = 1e-2  # a positive temperature below this decodes greedily (its limit)
DEFAULT_MAX_BODY_MIB = 8.0


class InvalidBody(ValueError):
    """A body that is not acceptable JSON; ``param`` names where, when known."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _NonFinite:
    """Stands in for ``NaN``/``Infinity`` while parsing, so the walk can say where it was."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def parse_json(body: bytes) -> Any:
    """Parse a request body strictly: UTF-8, finite numbers, no lone surrogates."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if (found := _find_invalid(value, "")) is not None:
        where, bad = found
        if isinstance(bad, _NonFinite):
            message = f"{bad.name} is not a valid JSON number; send a finite number"
        else:
            message = "a string contains a lone UTF-16 surrogate (not valid Unicode)"
        raise InvalidBody(message, where or None)
    return value


def _find_invalid(value: Any, path: str) -> tuple[str, Any] | None:
    """The path and value of the first NaN/Infinity or non-UTF-8-encodable string, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, value
        return None
    if isinstance(value, _NonFinite):
        return path, value
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if (found := _find_invalid(key, sub)) is not None:
                return found
            if (found := _find_invalid(item, sub)) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _find_invalid(item, f"{path}[{i}]")) is not None:
                return found
    return None


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def param_name(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "content")`` → ``"messages[0].content"`` (OpenAI's ``param``)."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif str(p) in _UNION_TAGS or "[" in str(p) or "function-" in str(p):
            continue  # pydantic's union-branch labels ("str", "list[int]"), not parameters
        else:
            out += f".{p}" if out else str(p)
    return out or None
