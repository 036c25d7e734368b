"""``sequential``: one request at a time with plain ``model.generate`` — the study's naive baseline.

Each generated token arrives through a generate streamer, which is also where the steps are
timed: the first token closes the prefill step (work = prompt tokens), every later token closes a
one-token decode step. A stopping criterion ends generation when the client goes away.
"""

from __future__ import annotations

from typing import Any

from joulebench.extras import require
from joulebench.serve.request import FinishReason, GenRequest
from joulebench.serve.schedulers.base import Step, ThreadedScheduler, register_scheduler


class _StepStreamer:
    """A ``generate`` streamer that reports steps and tokens of one request."""

    def __init__(self, scheduler: SequentialScheduler, req: GenRequest, start_s: float) -> None:
        self.scheduler = scheduler
        self.req = req
        self.last_s = start_s
        self.seen_prompt = False

    def put(self, value: Any) -> None:
        if not self.seen_prompt:  # generate first pushes the prompt itself
            self.seen_prompt = True
            return
        ids = [int(t) for t in value.reshape(-1).tolist()]
        now = self.scheduler.clock()
        sink = self.scheduler.sink
        prefill = not self.req.generated
        work = self.req.prompt_len if prefill else len(ids)
        sink.on_step(
            Step(
                self.last_s,
                now,
                {self.req: work},
                prefill_tokens=work if prefill else 0,
                decode_tokens=0 if prefill else len(ids),
                batch_size=1,
            )
        )
        self.last_s = now
        self.req.generated.extend(ids)
        sink.on_tokens(self.req, ids)

    def end(self) -> None:
        pass


@register_scheduler
class SequentialScheduler(ThreadedScheduler):
    name = "sequential"

    def _run_batch(self, batch: list[GenRequest]) -> None:
        for req in batch:
            self._generate_one(req)

    def _generate_one(self, req: GenRequest) -> None:
        torch = require("torch", "hf", "serving")
        transformers = require("transformers", "hf", "serving")
        req.scheduled_s = self.clock()
        stopping_base: Any = transformers.StoppingCriteria

        class _Cancelled(stopping_base):  # type: ignore[misc,valid-type]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), req.cancelled, dtype=torch.bool)

        sp = req.sampling
        config = transformers.GenerationConfig(
            max_new_tokens=req.max_new_tokens,
            do_sample=not sp.greedy,
            temperature=sp.temperature if not sp.greedy else None,
            top_p=sp.top_p if not sp.greedy else None,
            top_k=None,
            eos_token_id=sorted(req.eos_token_ids) or None,
            # ignore_eos: generate() would fall back to the model's EOS, so EOS is held off
            min_new_tokens=req.max_new_tokens if sp.ignore_eos else None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        device = getattr(self.model, "device", "cpu")
        input_ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=device)
        streamer = _StepStreamer(self, req, req.scheduled_s)
        if sp.seed is not None:
            torch.manual_seed(sp.seed)  # only this worker thread runs torch
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                streamer=streamer,
                stopping_criteria=transformers.StoppingCriteriaList([_Cancelled()]),
            )
        if req.generated and req.generated[-1] in req.eos_token_ids:
            reason = FinishReason.STOP
        elif req.cancelled:
            reason = req.cancel_reason
        else:
            reason = FinishReason.LENGTH
        self.sink.on_finish(req, reason)
