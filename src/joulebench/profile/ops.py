"""The model operations the profiler times: prefill, decode from a prepared cache, generate.

- ``prefill(batch)``: one forward over the left-padded prompts producing the first token; the KV
  cache is discarded.
- ``prepare_decode(batch)``: a prefill *outside* any window that leaves a KV cache and the first
  token; ``decode(state)`` then runs the decode steps from it and restores the cache (a cheap
  crop for the dynamic cache; the static cache is simply overwritten), so it can be repeated.
- ``generate(batch, n)``: ``model.generate`` with greedy decoding, as the study did.

With ``compile=True`` decode uses a static KV cache, a fixed-shape attention mask and a
``torch.compile``d step (CUDA graphs on GPU via ``reduce-overhead``): the launch-gap experiment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from joulebench.profile.batching import Batch, count_output_tokens

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DecodeState:
    """A prepared cache and what the decode steps need; reusable across repeats."""

    batch: Batch
    cache: Any
    first_tokens: Any  # [B, 1]
    steps: int  # decode steps (output tokens per row minus the prefill's first token)
    output_counts: tuple[int, ...]  # decode-phase output tokens per row (pads excluded)
    mask: Any  # [B, L] (dynamic) or [B, L + steps] (static, zero beyond L)


class ModelOps:
    """Prefill / decode / generate on one loaded model, eager or compiled."""

    def __init__(
        self,
        model: Any,
        *,
        pad_token_id: int,
        eos_token_ids: Sequence[int] | int | None,
        compile: bool = False,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.pad_token_id = int(pad_token_id)
        self.eos_token_ids = eos_token_ids
        self.compile = compile
        self.device = next(model.parameters()).device
        self._step = model.forward
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._step = torch.compile(model.forward, mode=mode, fullgraph=False, dynamic=False)

    # -- prefill --------------------------------------------------------------------------------
    def prefill(self, batch: Batch) -> Any:
        """Forward over the prompts; returns the first generated token per row (cache discarded)."""
        with self.torch.inference_mode():
            out = self.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=True,
                logits_to_keep=1,
            )
            return out.logits[:, -1].argmax(-1, keepdim=True)

    # -- decode ---------------------------------------------------------------------------------
    def natural_counts(self, batch: Batch) -> list[int]:
        """Output tokens per row of a real ``generate`` (EOS-terminated; pads excluded)."""
        new = self.generate(batch, batch.max_new_tokens, batch.min_new_tokens)
        return count_output_tokens(new, self.eos_token_ids)

    def prepare_decode(self, batch: Batch) -> DecodeState:
        """Prefill into a fresh cache (outside any window) and size the decode steps."""
        from transformers import DynamicCache, StaticCache

        torch = self.torch
        counts = [batch.max_new_tokens] * batch.size if batch.forced else self.natural_counts(batch)
        steps = max(counts) - 1
        config = self.model.config
        L = batch.padded_length
        with torch.inference_mode():
            if self.compile:
                cache = StaticCache(config=config, max_cache_len=L + max(steps, 1))
                mask = torch.zeros(
                    (batch.size, L + max(steps, 1)), dtype=torch.long, device=self.device
                )
                mask[:, :L] = batch.attention_mask
                kwargs = {"cache_position": torch.arange(L, device=self.device)}
                prompt_mask = batch.attention_mask
            else:
                cache = DynamicCache(config=config)
                mask = batch.attention_mask
                prompt_mask = mask
                kwargs = {}
            out = self.model(
                input_ids=batch.input_ids,
                attention_mask=prompt_mask,
                position_ids=batch.position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                **kwargs,
            )
            first = out.logits[:, -1].argmax(-1, keepdim=True)
        return DecodeState(batch, cache, first, steps, tuple(c - 1 for c in counts), mask)

    def decode(self, state: DecodeState) -> Any:
        """Run the decode steps from the prepared cache, then restore it; returns the last tokens."""
        torch = self.torch
        batch = state.batch
        L = batch.padded_length
        tok = state.first_tokens
        pos = batch.position_ids[:, -1:]
        with torch.inference_mode():
            if self.compile:
                mask = state.mask
                for s in range(state.steps):
                    mask[:, L + s] = 1
                    pos = pos + 1
                    out = self._step(
                        input_ids=tok,
                        attention_mask=mask,
                        position_ids=pos,
                        past_key_values=state.cache,
                        cache_position=torch.tensor([L + s], device=self.device),
                        use_cache=True,
                    )
                    tok = out.logits[:, -1].argmax(-1, keepdim=True).clone()
                mask[:, L:] = 0
            else:
                mask = state.mask
                ones = torch.ones((batch.size, 1), dtype=mask.dtype, device=self.device)
                for _ in range(state.steps):
                    mask = torch.cat([mask, ones], dim=1)
                    pos = pos + 1
                    out = self._step(
                        input_ids=tok,
                        attention_mask=mask,
                        position_ids=pos,
                        past_key_values=state.cache,
                        use_cache=True,
                    )
                    tok = out.logits[:, -1].argmax(-1, keepdim=True)
                grown = state.cache.get_seq_length() - L
                if grown > 0:
                    state.cache.crop(-grown)
        return tok

    # -- generate -------------------------------------------------------------------------------
    def generate(self, batch: Batch, max_new_tokens: int, min_new_tokens: int = 0) -> Any:
        """Greedy ``generate``; returns only the new tokens ``[B, T]``."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(max_new_tokens),
            "do_sample": False,
            "pad_token_id": self.pad_token_id,
        }
        if self.eos_token_ids is not None:
            kwargs["eos_token_id"] = self.eos_token_ids
        if min_new_tokens:
            kwargs["min_new_tokens"] = int(min_new_tokens)
        with self.torch.inference_mode():
            out = self.model.generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs
            )
        return out[:, batch.padded_length :]
