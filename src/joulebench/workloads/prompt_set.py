"""Prompts and prompt sets: chat conversations with reference answer lengths, and their encoding.

Token counts are always those of the target tokenizer after its chat template with the generation
prompt (never estimated from characters). The loaders (synthetic sets, files, Hugging Face
datasets) build these types; :func:`joulebench.workloads.prompts.load_prompts` chooses among them.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from joulebench.errors import ConfigError

ROLES = ("system", "user", "assistant")


@dataclass(slots=True)
class Prompt:
    """A conversation to send (ending with a user turn) and the length of its reference answer.

    ``reference_text``, when known, is the reference answer itself: encoding the set with a
    tokenizer then fills ``reference_output_tokens`` exactly.
    """

    id: str
    messages: list[dict[str, str]]
    reference_output_tokens: int | None = None
    reference_text: str | None = None


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    id: str
    input_ids: list[int]
    reference_output_tokens: int | None

    @property
    def n_input_tokens(self) -> int:
        return len(self.input_ids)


def chat_input_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` after the tokenizer's chat template with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "set tokenizer.chat_template or use a chat/instruct model"
        )
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def validate_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Check the chat shape (roles, string contents, ends with a user turn); say what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: messages must be a non-empty list of {{role, content}}")
    clean: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ConfigError(f"{where}: message {i} must be an object with role and content")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ConfigError(f"{where}: message {i} has role {role!r}; use one of {ROLES}")
        if not isinstance(content, str):
            raise ConfigError(f"{where}: message {i} content must be a string")
        clean.append({"role": str(role), "content": content})
    return clean


@dataclass(slots=True)
class PromptSet:
    name: str
    prompts: list[Prompt]
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ConfigError(f"prompt set '{self.name}' is empty; check the source and --n")

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def encode(self, tokenizer: Any) -> list[EncodedPrompt]:
        """Exact ids per prompt (chat template + generation prompt) and reference lengths."""
        encoded = []
        for prompt in self.prompts:
            ref = prompt.reference_output_tokens
            if ref is None and prompt.reference_text is not None:
                ref = count_tokens(tokenizer, prompt.reference_text)
            ids = chat_input_ids(tokenizer, prompt.messages)
            encoded.append(EncodedPrompt(prompt.id, ids, ref))
        return encoded

    def stats(self, tokenizer: Any) -> dict[str, Any]:
        """Distribution of input tokens (exact), reference lengths and turns."""
        encoded = self.encode(tokenizer)
        inputs = [e.n_input_tokens for e in encoded]
        refs = [e.reference_output_tokens for e in encoded if e.reference_output_tokens is not None]
        turns = [len(p.messages) for p in self.prompts]
        return {
            "name": self.name,
            "n": len(encoded),
            "source": dict(self.source),
            "tokenizer": getattr(tokenizer, "name_or_path", None),
            "input_tokens": _summary(inputs),
            "reference_output_tokens": _summary(refs) if refs else None,
            "n_without_reference": len(encoded) - len(refs),
            "turns": _summary(turns),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": len(self.prompts), "source": dict(self.source)}


def _summary(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": float(ordered[0]),
        "mean": float(statistics.fmean(ordered)),
        "median": float(statistics.median(ordered)),
        "p90": float(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]),
        "max": float(ordered[-1]),
        "total": float(sum(ordered)),
    }
