"""A tiny random Llama and encoded prompts of known lengths, built in-process (no files, no hub)."""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest


@dataclass
class EP:
    id: str
    input_ids: list[int]
    reference_output_tokens: int


class ForcedLength:
    """Test double for the output-length policy: reference lengths, forced (min == max)."""

    def __init__(self, natural: bool = False, cap: int = 12) -> None:
        self.natural, self.cap = natural, cap

    def max_new_tokens(self, ep: EP) -> int:
        return self.cap if self.natural else ep.reference_output_tokens

    def min_new_tokens(self, ep: EP) -> int | None:
        return None if self.natural else ep.reference_output_tokens

    def to_dict(self) -> dict[str, object]:
        return {"policy": "natural" if self.natural else "reference"}


@pytest.fixture(scope="session")
def tiny_loaded():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    tok = types.SimpleNamespace(pad_token_id=0, eos_token_id=1)
    return types.SimpleNamespace(
        model=model,
        tokenizer=tok,
        name="test-llama",
        precision="fp32",
        device="cpu",
        shape_only=False,
    )


@pytest.fixture
def prompts() -> list[EP]:
    # lengths 4, 7, 10, 13; reference outputs 3, 4, 5, 6
    return [EP(f"p{i}", list(range(3, 3 + 4 + 3 * i)), 3 + i) for i in range(4)]


@pytest.fixture
def make_ep():
    return EP


@pytest.fixture
def forced():
    return ForcedLength
