"""The model operations the profiler times: prefill, decode from a prepared cache, generate.

- ``prefill(batch)``: one forward over the left-padded prompts producing the first token; the KV
  cache is discarded.
- ``prepare_decode(batch)``: a prefill *outside* any window that leaves a KV cache and the first
  token; ``decode(state)`` then runs the decode steps from it and restores the cache (a crop for
  the dynamic cache, a rewind of the write position for the static one), so it can be repeated.
- ``generate(batch, n)``: ``model.generate`` with greedy decoding, as the study did.

Direct decode does the per-token work of a real greedy decode, the same as ``generate``'s loop:
forward one token per row with a growing attention mask (and growing ``DynamicCache``), copy the
last logits to fp32, suppress EOS while ``min_new_tokens`` is not reached (``generate``'s
``MinNewTokensLengthLogitsProcessor``; forced lengths), take the argmax, emit the pad token for
rows that already finished, store the token, update the finished rows (EOS check) and stop when
every row has finished (a host read of that flag every step, as ``generate`` does), then feed the
token back. What it does *not* do is ``generate()``'s own Python work: per call, validating the
generation config and building the logits processors, stopping criteria and cache; per step,
``prepare_inputs_for_generation`` / ``_update_model_kwargs_for_generation`` bookkeeping, the
logits-processor dispatch (which inspects signatures every step) and the concatenation onto the
whole prompt. On a tiny CPU model that overhead is a large share of a ``generate`` (a forward is
~1 ms); on a real model on a GPU it is small.

Every operation keeps a :class:`ForwardClock`: its wall seconds and the seconds spent inside the
model's forward (timed around the call for prefill and decode, by forward hooks inside
``generate``). What ``generate`` spends outside the forward, less what the direct path spends
outside it, is generate()'s own overhead, measured in its own windows: the result reports it as
``generate_overhead`` and the consistency check adds it to the direct phases (see
:mod:`joulebench.profile.result`). The KV cache goes by the keyword the model's forward declares
(:func:`joulebench.workloads.hf_compat.cache_kwargs`): the deprecated ``past_key_values`` made
transformers 5.23 warn on every decode step.

With ``compile=True`` decode uses a static KV cache, a fixed-shape attention mask and a
``torch.compile``d step (CUDA graphs on GPU via ``reduce-overhead``): the launch-gap experiment.
transformers' ``StaticLayer`` keeps its own write position (``cumulative_length``) and ignores
``cache_position``, so repeating a decode on the same cache must rewind that position to the
prompt length — otherwise the second run writes past ``max_cache_len`` (the inductor
"index out of bounds" on CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from joulebench.errors import ConfigError, at_least
from joulebench.profile.batching import Batch, count_output_tokens
from joulebench.results.cell import ForwardClockRecord
from joulebench.workloads.hf_compat import cache_arg_name

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
    cache_position: Any = None  # static cache: a [1] tensor advanced in place (static address)


@dataclass(slots=True)
class ForwardClock:
    """Wall seconds of the operations run, and the seconds of it spent inside ``model.forward``.

    ``calls`` counts :class:`ModelOps` calls, one per batch. A measurement's op covers the whole
    prompt set (every batch), so figures per measurement op need the batches per op
    (``to_dict(calls_per_op=…)``): counting per call made generate()'s overhead come out
    ``n_batches`` times too small (-26 % consistency at b=1 over 8 batches, -6 % at b=4).
    """

    calls: int = 0
    op_s: float = 0.0
    forward_s: float = 0.0
    forwards: int = 0

    def outside_per_op_s(self, calls_per_op: int = 1) -> float | None:
        """Seconds per measurement op spent outside the model's forward (``None`` before any)."""
        if not self.calls:
            return None
        return (self.op_s - self.forward_s) * calls_per_op / self.calls

    def to_dict(self, calls_per_op: int = 1) -> ForwardClockRecord:
        at_least(calls_per_op, 1, "calls_per_op", error=ValueError)
        return {
            "calls": self.calls,
            "calls_per_op": calls_per_op,
            "ops": self.calls / calls_per_op,
            "op_s": self.op_s,
            "forward_s": self.forward_s,
            "forwards": self.forwards,
            "outside_forward_per_op_s": self.outside_per_op_s(calls_per_op),
        }


def rewind_static_cache(cache: Any, length: int) -> None:
    """Set every static layer's write position back to ``length`` (the prompt), in place.

    In place (``fill_``) so the tensors keep the static addresses compiled graphs rely on. A
    sliding-window layer that has already rolled over cannot be rewound: that is a ConfigError.
    """
    for layer in getattr(cache, "layers", ()):
        if not getattr(layer, "is_initialized", False):
            continue
        if hasattr(layer, "cumulative_length_int"):
            window = int(getattr(layer, "max_cache_len", length))
            if layer.cumulative_length_int > window:
                raise ConfigError(
                    f"the static sliding-window cache rolled over ({layer.cumulative_length_int} "
                    f"> {window} tokens); use shorter prompts/outputs or no --compile"
                )
            layer.cumulative_length_int = int(length)
        cum: Any = getattr(layer, "cumulative_length", None)
        if hasattr(cum, "fill_"):
            cum.fill_(int(length))
        elif cum is not None:
            layer.cumulative_length = int(length)


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
        if isinstance(eos_token_ids, int):
            eos_token_ids = [eos_token_ids]
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids else None
        self.compile = compile
        self.device = next(model.parameters()).device
        self._eos = (
            None
            if self.eos_token_ids is None
            else torch.tensor(self.eos_token_ids, dtype=torch.long, device=self.device)
        )
        self._pad = torch.tensor(self.pad_token_id, dtype=torch.long, device=self.device)
        self._cache_arg = cache_arg_name(model)
        self.clock = ForwardClock()
        self._fwd_t0: float | None = None
        self._step = model.forward
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._step = torch.compile(model.forward, mode=mode, fullgraph=False, dynamic=False)

    # -- time inside the forward ----------------------------------------------------------------
    def take_clock(self) -> ForwardClock:
        """The clock since the last take (or since the ops were made), and a fresh one."""
        clock, self.clock = self.clock, ForwardClock()
        return clock

    def _pre_forward(self, *_: Any) -> None:
        self._fwd_t0 = time.perf_counter()

    def _post_forward(self, *_: Any) -> None:
        if self._fwd_t0 is not None:
            self.clock.forward_s += time.perf_counter() - self._fwd_t0
            self.clock.forwards += 1
            self._fwd_t0 = None

    def _forward(self, fn: Any, **kwargs: Any) -> Any:
        """``fn(**kwargs)`` (the model or its step), its seconds added to the forward clock."""
        t0 = time.perf_counter()
        out = fn(**kwargs)
        self.clock.forward_s += time.perf_counter() - t0
        self.clock.forwards += 1
        return out

    def _op_done(self, t0: float) -> None:
        self.clock.calls += 1
        self.clock.op_s += time.perf_counter() - t0

    # -- the per-token work shared by prefill and decode ---------------------------------------
    def _next_tokens(self, logits: Any, new_so_far: int, min_new_tokens: int) -> Any:
        """Greedy token ``[B]`` from the last logits, as generate's greedy loop picks it."""
        scores = logits[:, -1].to(copy=True, dtype=self.torch.float32)
        if self._eos is not None and new_so_far < min_new_tokens:
            scores[:, self._eos] = -float("inf")  # min_new_tokens: EOS not allowed yet
        return scores.argmax(-1)

    def _finished(self, tokens: Any) -> Any:
        if self._eos is None:
            return self.torch.zeros_like(tokens, dtype=self.torch.bool)
        return self.torch.isin(tokens, self._eos)

    # -- prefill --------------------------------------------------------------------------------
    def prefill(self, batch: Batch) -> Any:
        """Forward over the prompts; returns the first generated token per row (cache discarded)."""
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            out = self._forward(
                self.model,
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=True,
                logits_to_keep=1,
            )
            first = self._next_tokens(out.logits, 0, batch.min_new_tokens)[:, None]
        self._op_done(t0)
        return first

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
        position = None
        cache: Any
        with torch.inference_mode():
            if self.compile:
                cache = StaticCache(config=config, max_cache_len=L + max(steps, 1))
                mask = torch.zeros(
                    (batch.size, L + max(steps, 1)), dtype=torch.long, device=self.device
                )
                mask[:, :L] = batch.attention_mask
                kwargs = {"cache_position": torch.arange(L, device=self.device)}
                prompt_mask = batch.attention_mask
                position = torch.full((1,), L, dtype=torch.long, device=self.device)
            else:
                cache = DynamicCache(config=config)
                mask = batch.attention_mask
                prompt_mask = mask
                kwargs = {}
            out = self.model(
                input_ids=batch.input_ids,
                attention_mask=prompt_mask,
                position_ids=batch.position_ids,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: cache},
                **kwargs,
            )
            first = self._next_tokens(out.logits, 0, batch.min_new_tokens)[:, None]
        return DecodeState(batch, cache, first, steps, tuple(c - 1 for c in counts), mask, position)

    def decode(self, state: DecodeState) -> Any:
        """Run the decode steps from the prepared cache, then restore it.

        Returns the new tokens ``[B, 1 + steps]`` (the prefill's first token, then one per step;
        finished rows hold the pad token), exactly what greedy ``generate`` returns.
        """
        torch = self.torch
        t0 = time.perf_counter()
        batch = state.batch
        L = batch.padded_length
        min_new = batch.min_new_tokens
        tok = state.first_tokens
        pos = batch.position_ids[:, -1:]
        tokens = torch.full(
            (batch.size, 1 + state.steps), self.pad_token_id, dtype=torch.long, device=self.device
        )
        tokens[:, 0] = tok[:, 0]
        unfinished = ~self._finished(tok[:, 0])
        with torch.inference_mode():
            mask = state.mask
            ones = None if self.compile else torch.ones_like(mask[:, :1])
            if self.compile:
                state.cache_position.fill_(L)
            try:
                for s in range(state.steps):
                    if not bool(unfinished.any()):  # generate's stop check (a host read)
                        break
                    if self.compile:
                        mask[:, L + s] = 1
                        extra = {"cache_position": state.cache_position}
                    else:
                        mask = torch.cat([mask, ones], dim=1)
                        extra = {}
                    pos = pos + 1
                    out = self._forward(
                        self._step,
                        input_ids=tok,
                        attention_mask=mask,
                        position_ids=pos,
                        use_cache=True,
                        **{self._cache_arg: state.cache},
                        **extra,
                    )
                    nxt = self._next_tokens(out.logits, 1 + s, min_new)
                    nxt = torch.where(unfinished, nxt, self._pad)
                    tokens[:, 1 + s] = nxt
                    unfinished &= ~self._finished(nxt)
                    tok = nxt[:, None]
                    if self.compile:
                        state.cache_position.add_(1)
            finally:
                if self.compile:
                    state.mask[:, L:] = 0
                    rewind_static_cache(state.cache, L)
                else:
                    grown = state.cache.get_seq_length() - L
                    if grown > 0:
                        state.cache.crop(-grown)
        self._op_done(t0)
        return tokens

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
        t0 = time.perf_counter()
        # forward hooks time the model's work inside generate; removed after, so that a model
        # shared by several ModelOps (a sweep's cells) carries none between calls
        hooks = (
            self.model.register_forward_pre_hook(self._pre_forward),
            self.model.register_forward_hook(self._post_forward),
        )
        try:
            with self.torch.inference_mode():
                out = self.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs
                )
        finally:
            for h in hooks:
                h.remove()
        self._op_done(t0)
        return out[:, batch.padded_length :]
