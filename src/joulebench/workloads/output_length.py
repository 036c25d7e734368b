"""Output-length policy: stop at EOS, force each prompt's reference length, or force a fixed N.

Forced lengths set ``min_new_tokens == max_new_tokens`` so that every repeat generates exactly the
same number of tokens (required for shape-only models, whose random weights make EOS arbitrary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from joulebench.errors import ConfigError

#: Cap on generation when the policy is ``natural`` (stop at EOS), unless ``natural:<N>`` says.
DEFAULT_NATURAL_CAP = 1024
KINDS = ("natural", "reference", "fixed")


class _HasReference(Protocol):
    id: str
    reference_output_tokens: int | None


@dataclass(frozen=True, slots=True)
class OutputLength:
    kind: str  # "natural" | "reference" | "fixed"
    fixed: int | None = None
    natural_cap: int = DEFAULT_NATURAL_CAP

    @classmethod
    def parse(cls, text: str | int | OutputLength) -> OutputLength:
        """``natural``, ``natural:<cap>``, ``reference`` or a positive integer ``N``."""
        if isinstance(text, OutputLength):
            return text
        if isinstance(text, bool):
            raise ConfigError("output length must be natural, reference or a number of tokens")
        if isinstance(text, int):
            return cls._fixed(text, str(text))
        value = str(text).strip().lower()
        if value == "reference":
            return cls("reference")
        if value == "natural":
            return cls("natural")
        if value.startswith("natural:"):
            cap = value.split(":", 1)[1]
            if not cap.isdigit() or int(cap) < 1:
                raise ConfigError(f"output length '{text}': the cap after natural: must be >= 1")
            return cls("natural", natural_cap=int(cap))
        if value.lstrip("+").isdigit():
            return cls._fixed(int(value), str(text))
        raise ConfigError(
            f"output length '{text}' is not understood; use natural (stop at EOS), "
            "reference (each prompt's reference length) or a number of tokens such as 128"
        )

    @classmethod
    def _fixed(cls, n: int, text: str) -> OutputLength:
        if n < 1:
            raise ConfigError(f"output length '{text}' must be at least 1 token")
        return cls("fixed", fixed=n)

    @property
    def forced(self) -> bool:
        return self.kind != "natural"

    def max_new_tokens(self, prompt: _HasReference) -> int:
        if self.kind == "fixed":
            return int(self.fixed or 0)
        if self.kind == "reference":
            ref = prompt.reference_output_tokens
            if ref is None or ref < 1:
                raise ConfigError(
                    f"prompt '{prompt.id}' has no reference output length; use natural or a "
                    "fixed number of tokens, or give the prompt set a reference column"
                )
            return int(ref)
        return self.natural_cap

    def min_new_tokens(self, prompt: _HasReference) -> int:
        return self.max_new_tokens(prompt) if self.forced else 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "fixed": self.fixed, "natural_cap": self.natural_cap}

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(self.fixed)
        if self.kind == "natural" and self.natural_cap != DEFAULT_NATURAL_CAP:
            return f"natural:{self.natural_cap}"
        return self.kind
