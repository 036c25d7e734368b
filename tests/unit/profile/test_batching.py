from __future__ import annotations

import pytest
import torch

from joulebench.errors import ConfigError
from joulebench.profile.batching import (
    count_output_tokens,
    make_batches,
    order_for_bucketing,
    padding_ratio,
    parse_bucketing,
)


def test_left_padding_effective_and_computed_tokens(prompts, forced):
    ForcedLength = forced
    batches = make_batches(prompts, batch_size=2, pad_token_id=0, output_length=ForcedLength())
    b0, b1 = batches
    assert b0.lengths == (4, 7) and b1.lengths == (10, 13)
    assert b0.effective_tokens == 11 and b0.computed_tokens == 14
    assert b1.effective_tokens == 23 and b1.computed_tokens == 26
    # left padding: pads first, mask zero on pads, positions start at the first real token
    assert b0.input_ids[0, :3].tolist() == [0, 0, 0] and b0.input_ids[0, 3].item() == 3
    assert b0.attention_mask[0].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert b0.position_ids[0].tolist() == [0, 0, 0, 0, 1, 2, 3]
    assert padding_ratio(batches) == pytest.approx(1 - 34 / 40)
    # forced policy: the batch generates its longest reference
    assert b0.max_new_tokens == b0.min_new_tokens == 4 and b0.forced


def test_natural_policy_is_not_forced(prompts, forced):
    ForcedLength = forced
    b = make_batches(
        prompts, batch_size=4, pad_token_id=0, output_length=ForcedLength(natural=True)
    )[0]
    assert b.max_new_tokens == 12 and b.min_new_tokens == 0 and not b.forced


def test_bucketing_cuts_padding(make_ep, forced):
    EP, ForcedLength = make_ep, forced
    eps = [EP(str(i), [5] * n, 2) for i, n in enumerate([3, 20, 4, 19, 5, 18])]
    plain = make_batches(eps, batch_size=2, pad_token_id=0, output_length=ForcedLength())
    ranked = make_batches(
        eps, batch_size=2, pad_token_id=0, output_length=ForcedLength(), bucketing="sorted"
    )
    assert padding_ratio(ranked) < padding_ratio(plain)
    groups = order_for_bucketing(eps, 4, "buckets:2")
    assert [len(g) for g in groups] == [3, 3]  # batches never cross a bucket
    assert parse_bucketing("buckets:3") == ("buckets", 3)
    for bad in ("buckets:0", "buckets:x", "random"):
        with pytest.raises(ConfigError):
            parse_bucketing(bad)
    with pytest.raises(ConfigError):
        make_batches(eps, batch_size=0, pad_token_id=0, output_length=ForcedLength())


def test_output_tokens_stop_at_eos_and_exclude_pads():
    new = torch.tensor([[5, 6, 1, 0, 0], [5, 6, 7, 8, 9], [1, 0, 0, 0, 0]])
    assert count_output_tokens(new, [1]) == [3, 5, 1]
    assert count_output_tokens(new, None) == [5, 5, 5]
