"""Where does direct prefill + decode differ from a full ``generate()``? Time each difference alone.

Loads a model (a tiny one by path, e.g. from ``joulebench models make-tiny``), builds the same
left-padded batches ``joulebench profile`` builds, then times, interleaved round after round so
that a shared CPU affects every variant alike:

- ``direct``: ``ModelOps.prefill`` + ``ModelOps.decode`` (the profiler's direct windows);
- ``generate``: ``ModelOps.generate`` with the forced length (the full run);
- ``generate_forward``: the seconds spent inside ``model.forward`` during that generate
  (a forward hook pair), i.e. the model work generate does, without its own machinery;
- decode variants, each differing from ``direct`` decode in one thing: ``fresh_cache``
  (a new prefilled cache per repeat instead of crop and regrow), ``prealloc_mask`` (mask
  preallocated instead of grown by ``torch.cat``), ``no_logits_copy`` (argmax on the model's
  logits, no fp32 copy), ``no_grad`` (instead of ``inference_mode``), ``prefill_full_logits``
  (prefill without ``logits_to_keep=1``).

Prints, per variant, the median seconds per op over rounds with the min–max spread, and the
generate overhead split into per call and per step. Usage:

    .venv/bin/python benchmarks/phase_consistency.py /tmp/h1/small --batch-size 4 --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def _load(model: str, precision: str, batch_size: int, n: int) -> tuple[Any, Any, list[Any]]:
    from joulebench.profile.batching import make_batches
    from joulebench.profile.ops import ModelOps
    from joulebench.profile.runner import _eos_ids
    from joulebench.workloads.models import load_model
    from joulebench.workloads.output_length import OutputLength
    from joulebench.workloads.prompts import load_prompts

    loaded = load_model(model, precision, "cpu", seed=0)
    prompts = load_prompts("quick", n=n, seed=0, tokenizer=loaded.tokenizer)
    pad = loaded.tokenizer.pad_token_id
    batches = make_batches(
        list(prompts.encode(loaded.tokenizer)),
        batch_size=batch_size,
        pad_token_id=pad,
        output_length=OutputLength.parse("reference"),
        bucketing="none",
        device=next(loaded.model.parameters()).device,
    )
    ops = ModelOps(loaded.model, pad_token_id=pad, eos_token_ids=_eos_ids(loaded))
    return loaded, ops, batches


class ForwardClock:
    """Seconds spent inside ``model.forward`` (pre/post forward hooks on the top module)."""

    def __init__(self, model: Any) -> None:
        self.total_s = 0.0
        self.calls = 0
        self._t0 = 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)
        self.on = False

    def _pre(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        if self.on:
            self.total_s += time.perf_counter() - self._t0
            self.calls += 1


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()

    import torch

    loaded, ops, batches = _load(args.model, args.precision, args.batch_size, args.n)
    model = loaded.model
    states = [ops.prepare_decode(b) for b in batches]
    steps = sum(s.steps for s in states)
    clock = ForwardClock(model)

    def direct_prefill() -> None:
        for b in batches:
            ops.prefill(b)

    def direct_decode() -> None:
        for s in states:
            ops.decode(s)

    def generate_n() -> None:
        for b in batches:
            ops.generate(b, b.max_new_tokens, b.min_new_tokens)

    def generate_1() -> None:
        for b in batches:
            ops.generate(b, 1)

    def fresh_cache() -> None:  # a newly prefilled cache per repeat, prefill untimed
        for b in batches:
            s = ops.prepare_decode(b)
            t0 = time.perf_counter()
            ops.decode(s)
            fresh_cache.dt += time.perf_counter() - t0  # type: ignore[attr-defined]

    def decode_variant(prealloc: bool, copy_logits: bool, grad_ctx: Any) -> Callable[[], None]:
        from joulebench.workloads.hf_compat import cache_kwargs

        m = model

        def run() -> None:
            for s in states:
                b = s.batch
                L = b.padded_length
                tok, pos = s.first_tokens, b.position_ids[:, -1:]
                with grad_ctx():
                    if prealloc:
                        full = torch.ones((b.size, L + s.steps), dtype=torch.long)
                        full[:, :L] = s.mask
                    mask = s.mask
                    ones = torch.ones_like(mask[:, :1])
                    for i in range(s.steps):
                        mask = full[:, : L + i + 1] if prealloc else torch.cat([mask, ones], 1)
                        pos = pos + 1
                        out = model(
                            input_ids=tok,
                            attention_mask=mask,
                            position_ids=pos,
                            **cache_kwargs(m, s.cache),
                            use_cache=True,
                        )
                        logits = out.logits[:, -1]
                        if copy_logits:
                            logits = logits.to(copy=True, dtype=torch.float32)
                        tok = logits.argmax(-1)[:, None]
                    s.cache.crop(-(s.cache.get_seq_length() - L))

        return run

    def prefill_full_logits() -> None:
        with torch.inference_mode():
            for b in batches:
                out = model(
                    input_ids=b.input_ids,
                    attention_mask=b.attention_mask,
                    position_ids=b.position_ids,
                    use_cache=True,
                )
                out.logits[:, -1].float().argmax(-1)

    variants: dict[str, Callable[[], object]] = {
        "direct_prefill": direct_prefill,
        "direct_decode": direct_decode,
        "generate_1": generate_1,
        "generate_n": generate_n,
        "decode_cat_copy_inference": decode_variant(False, True, torch.inference_mode),
        "decode_prealloc_mask": decode_variant(True, True, torch.inference_mode),
        "decode_no_logits_copy": decode_variant(False, False, torch.inference_mode),
        "decode_no_grad": decode_variant(False, True, torch.no_grad),
        "prefill_full_logits": prefill_full_logits,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    times["decode_fresh_cache"] = []
    times["generate_n_in_forward"] = []
    times["generate_1_in_forward"] = []
    times["direct_outside_forward"] = []
    for fn in variants.values():  # warm-up
        fn()
    for r in range(args.rounds):
        order = list(variants.items())
        if r % 2:
            order.reverse()  # alternate the order: no variant always runs after the same one
        for name, fn in order:
            if name.startswith("generate"):
                clock.total_s, clock.on = 0.0, True
            ops.take_clock()
            times[name].append(_timed(fn))
            if name == "direct_prefill":
                outside = ops.take_clock()
                pre_out = outside.op_s - outside.forward_s
            elif name == "direct_decode":
                outside = ops.take_clock()
                dec_out = outside.op_s - outside.forward_s
            if name.startswith("generate"):
                clock.on = False
                times[f"{name}_in_forward"].append(clock.total_s)
        times["direct_outside_forward"].append(pre_out + dec_out)
        fresh_cache.dt = 0.0  # type: ignore[attr-defined]
        fresh_cache()
        times["decode_fresh_cache"].append(fresh_cache.dt)  # type: ignore[attr-defined]

    def med(k: str) -> float:
        return statistics.median(times[k])

    print(
        f"model {args.model} {args.precision} b={args.batch_size} n={args.n}: "
        f"{len(batches)} batches, {steps} decode steps; {args.rounds} interleaved rounds"
    )
    print(f"{'variant':32s} {'median ms':>10s} {'min':>8s} {'max':>8s}")
    for k, v in times.items():
        print(f"{k:32s} {med(k) * 1e3:10.2f} {min(v) * 1e3:8.2f} {max(v) * 1e3:8.2f}")
    direct = med("direct_prefill") + med("direct_decode")
    gen = med("generate_n")
    print(
        f"direct prefill+decode {direct * 1e3:.2f} ms vs generate {gen * 1e3:.2f} ms: "
        f"{(direct - gen) / gen:+.1%}"
    )
    fwd = med("generate_n_in_forward")
    print(
        f"generate: {fwd * 1e3:.2f} ms inside forward, {(gen - fwd) * 1e3:.2f} ms outside "
        f"({(gen - fwd) / gen:.1%})"
    )
    per_call = (med("generate_1") - med("generate_1_in_forward")) / len(batches)
    per_step = ((gen - fwd) - (med("generate_1") - med("generate_1_in_forward"))) / steps
    print(
        f"generate overhead outside forward: {per_call * 1e3:.3f} ms per call, "
        f"{per_step * 1e3:.3f} ms per step"
    )


if __name__ == "__main__":
    main()
