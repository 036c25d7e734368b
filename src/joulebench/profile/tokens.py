"""The token counts of one pass over a prompt set, and the division every per-token and
per-request figure of a profile cell goes through."""

from __future__ import annotations

from dataclasses import dataclass

from joulebench.results.cell import TokenCounts


def div(a: float | None, b: float) -> float | None:
    """``a / b``; ``None`` without ``a`` or when ``b`` is 0."""
    return None if a is None or not b else a / b


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of one pass over the prompt set."""

    n_requests: int
    n_batches: int
    input_effective: int
    input_computed: int
    decode_output: int
    decode_steps: int

    @property
    def output(self) -> int:
        return self.decode_output + self.n_requests  # the prefill produces one token per row

    def to_dict(self) -> TokenCounts:
        return {
            "input_effective": self.input_effective,
            "input_computed": self.input_computed,
            "output": self.output,
            "decode_output": self.decode_output,
        }
