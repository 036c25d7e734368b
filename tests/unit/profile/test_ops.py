from __future__ import annotations

import pytest
import torch

from joulebench.profile.batching import make_batches
from joulebench.profile.ops import ModelOps


def test_direct_decode_matches_generate_and_is_repeatable(tiny_loaded, prompts, forced):
    ops = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1])
    batch = make_batches(prompts, batch_size=4, pad_token_id=0, output_length=forced())[0]
    ref = ops.generate(batch, batch.max_new_tokens, batch.min_new_tokens)
    assert ref.shape == (4, batch.max_new_tokens)
    first = ops.prefill(batch)
    assert torch.equal(first[:, 0], ref[:, 0])
    state = ops.prepare_decode(batch)
    assert state.steps == batch.max_new_tokens - 1 and state.output_counts == (5, 5, 5, 5)
    last1 = ops.decode(state)
    last2 = ops.decode(state)  # the cache was restored: same result again
    assert state.cache.get_seq_length() == batch.padded_length
    assert torch.equal(last1, last2)
    assert torch.equal(last1[:, 0], ref[:, -1])


@pytest.mark.slow
def test_compiled_static_cache_decode_matches_eager(tiny_loaded, prompts, forced):
    batch = make_batches(prompts[:2], batch_size=2, pad_token_id=0, output_length=forced())[0]
    eager = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1])
    compiled = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1], compile=True)
    want = eager.decode(eager.prepare_decode(batch))
    state = compiled.prepare_decode(batch)
    assert torch.equal(compiled.decode(state), want)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known bug: a second compiled decode on the same static cache hits an inductor index error on CPU",
)
def test_compiled_decode_is_repeatable(tiny_loaded, prompts, forced):
    batch = make_batches(prompts[:2], batch_size=2, pad_token_id=0, output_length=forced())[0]
    compiled = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1], compile=True)
    state = compiled.prepare_decode(batch)
    first = compiled.decode(state)
    assert torch.equal(compiled.decode(state), first)
