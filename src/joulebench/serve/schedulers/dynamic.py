"""``dynamic``: collect requests for a short window, then run static left-padded batches.

Collected requests are sorted by prompt length and cut into batches of at most
``max_batch_size`` rows. How they are cut (``bucketing``):

- ``cost`` (default): the cut with the least predicted time, from a cost model this scheduler
  fits to its own timed steps (:mod:`.batch_cost`): a cut saves padding but costs an extra pass,
  and which wins depends on the machine and the model. Until the model is calibrated (a few
  batches of different sizes and widths), the ``ratio`` rule is used;
- ``ratio``: length buckets, longest prompt at most ``bucket_ratio`` × the shortest + 8 tokens.

Each batch runs as one static batch: one prefill forward over the left-padded prompts, then one
decode forward per step until every row is done; new arrivals wait for the next window (that is
what separates it from continuous batching). Tokens stream per step. Sampling parameters are
honoured per row, each row with its own seeded generator.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from joulebench.errors import at_least
from joulebench.extras import require
from joulebench.serve.request import FinishReason, GenRequest
from joulebench.serve.schedulers.base import Step, ThreadedScheduler, register_scheduler
from joulebench.serve.schedulers.batch_cost import BatchCostModel, plan_buckets
from joulebench.workloads.hf_compat import cache_kwargs

BUCKETINGS = ("cost", "ratio")

log = logging.getLogger(__name__)


def length_buckets(
    requests: list[GenRequest], max_batch_size: int, bucket_ratio: float = 1.5
) -> list[list[GenRequest]]:
    """Sort by prompt length and cut into buckets of similar length (see module docstring)."""
    ordered = sorted(requests, key=lambda r: r.prompt_len)
    buckets: list[list[GenRequest]] = []
    for req in ordered:
        cur = buckets[-1] if buckets else None
        if (
            cur is not None
            and len(cur) < max_batch_size
            and req.prompt_len <= cur[0].prompt_len * bucket_ratio + 8
        ):
            cur.append(req)
        else:
            buckets.append([req])
    return buckets


@register_scheduler
class DynamicScheduler(ThreadedScheduler):
    name = "dynamic"

    def __init__(
        self,
        *args: Any,
        window_s: float = 0.02,
        bucket_ratio: float = 1.5,
        bucketing: str = "cost",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        at_least(window_s, 0, "window_s", error=ValueError)
        at_least(bucket_ratio, 1, "bucket_ratio", error=ValueError)
        if bucketing not in BUCKETINGS:
            raise ValueError(f"bucketing must be one of {', '.join(BUCKETINGS)}, got {bucketing!r}")
        super().__init__(
            *args, window_s=window_s, bucket_ratio=bucket_ratio, bucketing=bucketing, **kwargs
        )
        self.window_s = window_s
        self.bucket_ratio = bucket_ratio
        self.bucketing = bucketing
        self.cost_model = BatchCostModel()
        self._rng = random.Random(seed)

    def _collect(self, first: GenRequest) -> list[GenRequest]:
        more: list[GenRequest] = []
        limit = self.max_batch_size * 4 - 1
        deadline = time.monotonic() + self.window_s
        while len(more) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            req = self._next(timeout_s=left)
            if req is None:
                break
            more.append(req)
        return more

    def buckets(self, batch: list[GenRequest]) -> list[list[GenRequest]]:
        """The static batches ``batch`` is cut into (see the module docstring)."""
        if self.bucketing == "ratio" or not self.cost_model.ready:
            return length_buckets(batch, self.max_batch_size, self.bucket_ratio)
        ordered = sorted(batch, key=lambda r: r.prompt_len)
        plan = plan_buckets(
            [r.prompt_len for r in ordered],
            [r.max_new_tokens for r in ordered],
            self.max_batch_size,
            self.cost_model.predictor(),
        )
        return [ordered[i:j] for i, j in plan]

    def _run_batch(self, batch: list[GenRequest]) -> None:
        for bucket in self.buckets(batch):
            self._run_isolated(bucket)

    def _run_isolated(self, rows: list[GenRequest]) -> None:
        """Run ``rows`` as one static batch; if it raises, find the request that broke it.

        The unfinished rows are bisected and re-run (each from where it stopped: its prompt plus
        the tokens it already streamed), so only a row that fails on its own gets the error. The
        healthy path pays nothing: the search starts only after an exception.
        """
        rows = [r for r in rows if not self._drop_cancelled(r)]
        if not rows:
            return
        try:
            self._run_static(rows)
        except Exception as exc:
            left = [r for r in rows if not r.finished and not self._drop_cancelled(r)]
            if len(rows) == 1:
                log.warning("dynamic: request %s failed on its own: %s", rows[0].id, exc)
                for r in left:
                    self.sink.on_finish(r, FinishReason.ERROR, f"{type(exc).__name__}: {exc}")
                return
            log.warning(
                "dynamic: a batch of %d failed (%s: %s); re-running its %d unfinished rows apart",
                len(rows),
                type(exc).__name__,
                exc,
                len(left),
            )
            half = (len(left) + 1) // 2
            for part in (left[:half], left[half:]):
                self._run_isolated(part)

    # -- one static batch --------------------------------------------------------------------
    def _run_static(self, rows: list[GenRequest]) -> None:
        torch = require("torch", "hf", "serving")
        transformers = require("transformers", "hf", "serving")
        device = getattr(self.model, "device", "cpu")
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = next(iter(rows[0].eos_token_ids), 0)
        # a re-run row (see _run_isolated) continues after the tokens it already streamed
        contexts = [r.prompt_ids + r.generated for r in rows]
        width = max(len(c) for c in contexts)
        ids = [[pad_id] * (width - len(c)) + c for c in contexts]
        mask = [[0] * (width - len(c)) + [1] * len(c) for c in contexts]
        input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        attention = torch.tensor(mask, dtype=torch.long, device=device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = transformers.DynamicCache(config=self.model.config)
        cache_arg = cache_kwargs(self.model, cache)
        gens = [self._generator(r, torch, device) for r in rows]
        done = [False] * len(rows)

        start = self.clock()
        for r in rows:
            r.scheduled_s = start
        prefill = True
        with torch.inference_mode():
            while True:
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    **cache_arg,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :].float()
                # greedy rows: one argmax over the batch and one host transfer per step (a
                # per-row argmax + .item() costs more than the forward on small models)
                greedy = logits.argmax(-1).tolist()
                next_ids = [
                    pad_id
                    if done[i]
                    else greedy[i]
                    if rows[i].sampling.greedy
                    else self._pick(logits[i], rows[i], gens[i], torch)
                    for i in range(len(rows))
                ]
                end = self.clock()
                if prefill:  # the cost model learns from every timed forward
                    self.cost_model.observe_prefill(len(rows) * width, end - start)
                else:
                    self.cost_model.observe_decode(len(rows), end - start)
                active = [i for i in range(len(rows)) if not done[i]]
                work = {rows[i]: (width if prefill else 1) for i in active}
                self.sink.on_step(
                    Step(
                        start,
                        end,
                        work,
                        prefill_tokens=sum(len(contexts[i]) for i in active) if prefill else 0,
                        decode_tokens=0 if prefill else len(active),
                        batch_size=len(rows),
                    )
                )
                start, prefill = end, False
                for i in active:
                    self._advance(rows[i], next_ids[i])
                    done[i] = rows[i].finished
                if all(done):
                    return
                input_ids = torch.tensor([[t] for t in next_ids], dtype=torch.long, device=device)
                attention = torch.cat([attention, torch.ones_like(input_ids)], dim=-1)
                positions = positions[:, -1:] + 1
                gone = [i for i in range(len(rows)) if rows[i].cancelled]
                if gone:  # a client went away: its row leaves the batch (finished rows stay)
                    for i in gone:
                        self._drop_cancelled(rows[i])
                    keep = [i for i in range(len(rows)) if i not in gone]
                    if all(done[i] for i in keep):
                        return
                    index = torch.tensor(keep, dtype=torch.long, device=device)
                    cache.batch_select_indices(index)
                    input_ids, attention, positions = (
                        t.index_select(0, index) for t in (input_ids, attention, positions)
                    )
                    rows = [rows[i] for i in keep]
                    gens = [gens[i] for i in keep]
                    done = [done[i] for i in keep]
                    contexts = [contexts[i] for i in keep]

    def _advance(self, req: GenRequest, token_id: int) -> None:
        if req.cancelled:
            self.sink.on_finish(req, req.cancel_reason)
            return
        req.generated.append(token_id)
        self.sink.on_tokens(req, [token_id])
        reason = req.finish_reason_for(token_id)
        if reason is not None:
            self.sink.on_finish(req, reason)

    def _generator(self, req: GenRequest, torch: Any, device: Any) -> Any:
        if req.sampling.greedy:
            return None
        seed = req.sampling.seed if req.sampling.seed is not None else self._rng.randrange(2**62)
        return torch.Generator(device=device).manual_seed(seed)

    @staticmethod
    def _pick(logits: Any, req: GenRequest, gen: Any, torch: Any) -> int:
        sp = req.sampling
        if sp.greedy:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits / sp.temperature, dim=-1)
        if sp.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < sp.top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            probs = probs / probs.sum()
        return int(torch.multinomial(probs, 1, generator=gen).item())
