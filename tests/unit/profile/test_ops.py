from __future__ import annotations

import types

import pytest
import torch

from joulebench.errors import ConfigError
from joulebench.profile.batching import make_batches
from joulebench.profile.ops import ModelOps, rewind_static_cache


def test_direct_decode_reproduces_generate_and_is_repeatable(tiny_loaded, prompts, forced):
    ops = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1])
    batch = make_batches(prompts, batch_size=4, pad_token_id=0, output_length=forced())[0]
    ref = ops.generate(batch, batch.max_new_tokens, batch.min_new_tokens)
    assert ref.shape == (4, batch.max_new_tokens)
    first = ops.prefill(batch)
    assert torch.equal(first[:, 0], ref[:, 0])
    state = ops.prepare_decode(batch)
    assert state.steps == batch.max_new_tokens - 1 and state.output_counts == (5, 5, 5, 5)
    out1 = ops.decode(state)
    out2 = ops.decode(state)  # the cache was restored: same tokens again
    assert state.cache.get_seq_length() == batch.padded_length
    # every token, not just the last: the same greedy work generate does, fed back step by step
    assert torch.equal(out1, ref) and torch.equal(out2, ref)


def test_forced_lengths_suppress_eos_like_min_new_tokens(tiny_loaded, make_ep, forced):
    """A model whose favourite token is EOS: forced decode must still emit N tokens without EOS."""
    model = tiny_loaded.model
    eos = int(model(torch.tensor([[3, 4, 5]])).logits[0, -1].argmax())  # greedy next token
    ops = ModelOps(model, pad_token_id=0, eos_token_ids=[eos])
    batch = make_batches(
        [make_ep("a", [3, 4, 5], 4)], batch_size=1, pad_token_id=0, output_length=forced()
    )[0]
    ref = ops.generate(batch, batch.max_new_tokens, batch.min_new_tokens)
    out = ops.decode(ops.prepare_decode(batch))
    assert torch.equal(out, ref) and eos not in out.tolist()[0]
    # natural lengths: the same prompt stops at once on EOS; finished rows only emit pads
    nat = make_batches(
        [make_ep("a", [3, 4, 5], 4), make_ep("b", [7, 8, 9, 10, 11], 4)],
        batch_size=2,
        pad_token_id=0,
        output_length=forced(natural=True, cap=5),
    )[0]
    state = ops.prepare_decode(nat)
    got = ops.decode(state)
    want = ops.generate(nat, nat.max_new_tokens)
    assert torch.equal(got, want)
    assert got[0, 0] == eos and (got[0, 1:] == 0).all()  # row a: EOS, then pads only


@pytest.mark.slow
def test_compiled_static_cache_decode_matches_eager_and_repeats(tiny_loaded, prompts, forced):
    batch = make_batches(prompts[:2], batch_size=2, pad_token_id=0, output_length=forced())[0]
    eager = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1])
    compiled = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1], compile=True)
    want = eager.decode(eager.prepare_decode(batch))
    state = compiled.prepare_decode(batch)
    first = compiled.decode(state)
    assert torch.equal(first, want)
    # the second and third runs on the same static cache (it used to hit an index error)
    assert torch.equal(compiled.decode(state), want)
    assert torch.equal(compiled.decode(state), want)
    assert int(state.cache.get_seq_length()) == batch.padded_length


def test_rewind_static_cache_refuses_a_rolled_sliding_window():
    class Sliding:
        is_initialized = True
        max_cache_len = 8
        cumulative_length_int = 12

    cache = types.SimpleNamespace(layers=[Sliding()])
    with pytest.raises(ConfigError, match="rolled over"):
        rewind_static_cache(cache, 4)
    cache.layers[0].cumulative_length_int = 6
    rewind_static_cache(cache, 4)
    assert cache.layers[0].cumulative_length_int == 4


def test_forward_clock_counts_ops_and_forwards(tiny_loaded, prompts, forced):
    ops = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1])
    batch = make_batches(prompts[:2], batch_size=2, pad_token_id=0, output_length=forced())[0]
    state = ops.prepare_decode(batch)
    ops.take_clock()  # the preparation is no measurement
    ops.prefill(batch)
    pre = ops.take_clock()
    assert (pre.calls, pre.forwards) == (1, 1) and 0 < pre.forward_s <= pre.op_s
    ops.decode(state)
    dec = ops.take_clock()
    assert (dec.calls, dec.forwards) == (1, state.steps)
    ops.generate(batch, batch.max_new_tokens, batch.min_new_tokens)
    gen = ops.take_clock()
    # the hooks time each forward inside generate: prefill + one per decode step
    assert (gen.calls, gen.forwards) == (1, 1 + state.steps)
    assert 0 < gen.forward_s < gen.op_s and gen.outside_per_op_s() is not None
    assert not tiny_loaded.model._forward_hooks and not tiny_loaded.model._forward_pre_hooks
    assert ops.take_clock().calls == 0


def test_decode_passes_the_cache_by_the_name_forward_declares(tiny_loaded, prompts, forced):
    """transformers 5.23 deprecates ``past_key_values``: one FutureWarning per decode step."""
    import warnings

    ops = ModelOps(tiny_loaded.model, pad_token_id=0, eos_token_ids=[1])
    batch = make_batches(prompts[:2], batch_size=2, pad_token_id=0, output_length=forced())[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.decode(ops.prepare_decode(batch))


def test_forward_clock_per_measurement_op_covers_every_batch():
    """A measurement op runs every batch: its outside-forward seconds are per set, not per call."""
    from joulebench.profile.ops import ForwardClock

    clock = ForwardClock(calls=16, op_s=1.0, forward_s=0.6, forwards=16)  # 2 ops × 8 batches
    d = clock.to_dict(calls_per_op=8)
    assert d["ops"] == 2 and d["calls"] == 16
    assert d["outside_forward_per_op_s"] == pytest.approx(0.2)  # 0.4 s over 2 ops
    assert clock.to_dict()["outside_forward_per_op_s"] == pytest.approx(0.025)
    with pytest.raises(ValueError):
        clock.to_dict(calls_per_op=0)
