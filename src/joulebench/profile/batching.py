"""Static batches for decoder-only models: left padding, attention masks, token accounting.

Decoder-only batches are *always* left-padded with an attention mask (the study's scripts were
not, so their padded rows generated after pad tokens). Accounting is explicit:

- *effective* input tokens: real prompt tokens (padding excluded);
- *computed* input tokens: what the model computes over (batch × padded length);
- output tokens: generated tokens up to and including each row's first EOS; the pads a finished
  row keeps emitting while the rest of the batch goes on are never counted.

Bucketing cuts padding: ``none`` (prompt order), ``sorted`` (by length), ``buckets:K`` (K length
quantile buckets, batches formed inside each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joulebench.errors import ConfigError, at_least

if TYPE_CHECKING:
    from joulebench.workloads.output_length import OutputLength

BUCKETING_KINDS = ("none", "sorted", "buckets:K")


def parse_bucketing(spec: str) -> tuple[str, int]:
    """``none`` → (none, 1), ``sorted`` → (sorted, 1), ``buckets:K`` → (buckets, K)."""
    s = spec.strip().lower()
    if s in ("none", "sorted"):
        return s, 1
    if s.startswith("buckets:"):
        try:
            k = int(s.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 1:
            return "buckets", k
        raise ConfigError(f"bucketing {spec!r}: K in buckets:K must be an integer ≥ 1")
    raise ConfigError(f"unknown bucketing {spec!r}; known: {', '.join(BUCKETING_KINDS)}")


@dataclass(slots=True)
class Batch:
    """One left-padded static batch (tensors on the model's device)."""

    prompt_ids: tuple[str, ...]
    input_ids: Any  # LongTensor [B, L]
    attention_mask: Any  # LongTensor [B, L]
    position_ids: Any  # LongTensor [B, L], counting from the first real token
    lengths: tuple[int, ...]
    max_new_tokens: int
    min_new_tokens: int

    @property
    def size(self) -> int:
        return len(self.lengths)

    @property
    def padded_length(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def effective_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def computed_tokens(self) -> int:
        return self.size * self.padded_length

    @property
    def forced(self) -> bool:
        return self.min_new_tokens == self.max_new_tokens


def _ids(ep: Any) -> list[int]:
    ids = ep.input_ids
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = [int(t) for t in ids]
    if ids and isinstance(ids[0], list):  # pragma: no cover - defensive: [1, L] tensors
        ids = ids[0]
    return ids


def order_for_bucketing(encoded: Sequence[Any], batch_size: int, bucketing: str) -> list[list[Any]]:
    """Group prompts into batches of at most ``batch_size`` according to ``bucketing``."""
    at_least(batch_size, 1, "batch size")
    kind, k = parse_bucketing(bucketing)
    items = list(encoded)
    if kind == "none":
        groups = [items]
    else:
        ranked = sorted(items, key=lambda ep: len(_ids(ep)), reverse=True)
        if kind == "sorted" or k == 1:
            groups = [ranked]
        else:
            n = len(ranked)
            k = min(k, n) or 1
            bounds = [round(i * n / k) for i in range(k + 1)]
            groups = [ranked[bounds[i] : bounds[i + 1]] for i in range(k)]
    return [g[i : i + batch_size] for g in groups for i in range(0, len(g), batch_size)]


def make_batches(
    encoded: Sequence[Any],
    *,
    batch_size: int,
    pad_token_id: int,
    output_length: OutputLength,
    bucketing: str = "none",
    device: Any = "cpu",
) -> list[Batch]:
    """Left-pad prompts into static batches; the output length policy sets each batch's limits.

    With a forced policy (``reference`` or ``N``) every row of a batch generates the batch's
    longest target (``min_new_tokens == max_new_tokens``), so token counts are known exactly.
    """
    import torch

    if not encoded:
        raise ConfigError("no prompts to profile")
    batches = []
    for group in order_for_bucketing(encoded, batch_size, bucketing):
        rows = [_ids(ep) for ep in group]
        if any(not r for r in rows):
            raise ConfigError("an encoded prompt is empty; check the prompt set")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        max_new = max(int(output_length.max_new_tokens(ep)) for ep in group)
        mins = [output_length.min_new_tokens(ep) for ep in group]
        min_new = max(int(m or 0) for m in mins)
        if max_new < 1:
            raise ConfigError("the output length policy asks for fewer than 1 new token")
        if min_new > 0:
            min_new = max_new  # forced policy: all rows generate the batch's longest target
        batches.append(
            Batch(
                prompt_ids=tuple(str(ep.id) for ep in group),
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=pos.to(device),
                lengths=tuple(len(r) for r in rows),
                max_new_tokens=max_new,
                min_new_tokens=min_new,
            )
        )
    return batches


def count_output_tokens(new_tokens: Any, eos_token_ids: Sequence[int] | int | None) -> list[int]:
    """Generated tokens per row, up to and including the first EOS (finished rows' pads excluded).

    ``new_tokens`` is the ``[B, T]`` tensor of generated ids only (prompt removed).
    """
    if eos_token_ids is None:
        eos: set[int] = set()
    elif isinstance(eos_token_ids, int):
        eos = {eos_token_ids}
    else:
        eos = {int(e) for e in eos_token_ids}
    counts = []
    for row in new_tokens.tolist():
        n = len(row)
        for j, tok in enumerate(row):
            if tok in eos:
                n = j + 1
                break
        counts.append(n)
    return counts


def padding_ratio(batches: Sequence[Batch]) -> float:
    """Share of computed input tokens that are padding."""
    computed = sum(b.computed_tokens for b in batches)
    return 0.0 if computed == 0 else 1.0 - sum(b.effective_tokens for b in batches) / computed
