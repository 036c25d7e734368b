"""What a static batch costs on this machine, learnt from the batches the server runs.

The dynamic scheduler must decide how to cut the requests it collected into static batches. A
cut saves padding (every row of a batch is computed at the batch's widest prompt) but costs a
whole extra pass (its own prefill and its own decode steps). Which way wins depends on the
hardware and the model: on a CPU with a small model a decode step's fixed cost dwarfs the cost of
extra rows, so one wide batch wins; with a large model on a GPU prefill padding is real compute.
So nothing is assumed: :class:`BatchCostModel` fits two lines by weighted least squares over the
recent steps the scheduler timed,

- decode step time = ``step_s + row_s × rows`` (finished rows are still computed in a static
  batch, so ``rows`` is the batch size),
- prefill time = ``prefill_s + token_s × rows × width`` (padded prompt tokens),

with exponential forgetting so it follows the machine. Time stands in for energy: while the
server is busy its power is close to constant, so the faster plan is the cheaper one.
:func:`plan_buckets` then picks the partition of the length-sorted requests with the least
predicted time (exact dynamic programming over contiguous groups). Until both lines are
identifiable (enough steps, with different row counts and widths) the caller falls back to its
fixed length-ratio rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from joulebench.analysis.stats import ForgettingLine
from joulebench.errors import at_least

#: Steps a fit needs (each line) before its prediction is used.
MIN_OBSERVATIONS = 8


def _nonnegative_fit(line: ForgettingLine) -> tuple[float, float] | None:
    """(intercept, slope), both ≥ 0, or ``None`` before :data:`MIN_OBSERVATIONS` points or
    while x has not varied enough."""
    if line.n < MIN_OBSERVATIONS:
        return None
    p = line.params()
    if p is None:
        return None
    intercept, slope = p
    if slope < 0:  # noise: more work cannot take less time
        return max(0.0, line.sy / line.sw), 0.0
    return max(0.0, intercept), slope


class BatchCostModel:
    """Predicted seconds of a static batch, from the decode steps and prefills it has seen."""

    def __init__(self, decay: float = 0.98) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self._decode = ForgettingLine(forget=decay)
        self._prefill = ForgettingLine(forget=decay)

    def observe_decode(self, rows: int, duration_s: float) -> None:
        if rows > 0 and duration_s >= 0:
            self._decode.observe(float(rows), duration_s)

    def observe_prefill(self, padded_tokens: int, duration_s: float) -> None:
        if padded_tokens > 0 and duration_s >= 0:
            self._prefill.observe(float(padded_tokens), duration_s)

    @property
    def ready(self) -> bool:
        return (
            _nonnegative_fit(self._decode) is not None
            and _nonnegative_fit(self._prefill) is not None
        )

    def coefficients(self) -> dict[str, float] | None:
        """The fitted costs (s): per decode step, per row per step, per prefill, per token."""
        dec, pre = _nonnegative_fit(self._decode), _nonnegative_fit(self._prefill)
        if dec is None or pre is None:
            return None
        return {"step_s": dec[0], "row_s": dec[1], "prefill_s": pre[0], "token_s": pre[1]}

    def predictor(self) -> Callable[[int, int, int], float]:
        """``predict(rows, width, steps)``: seconds for one static batch of ``rows`` prompts
        padded to ``width``, ``steps`` tokens long, with the coefficients fitted now (fitted
        once, however many cuts a plan evaluates)."""
        c = self.coefficients()
        if c is None:
            raise RuntimeError("the cost model is not calibrated yet (check .ready)")
        step_s, row_s, prefill_s, token_s = c["step_s"], c["row_s"], c["prefill_s"], c["token_s"]

        def predict(rows: int, width: int, steps: int) -> float:
            return prefill_s + token_s * rows * width + max(0, steps - 1) * (step_s + row_s * rows)

        return predict

    def predict_s(self, rows: int, width: int, steps: int) -> float:
        """Seconds for one static batch (see :meth:`predictor`)."""
        return self.predictor()(rows, width, steps)


def plan_buckets(
    lengths: Sequence[int],
    steps: Sequence[int],
    max_batch_size: int,
    cost_s: Callable[[int, int, int], float],
) -> list[tuple[int, int]]:
    """The cheapest cut of length-sorted requests into contiguous batches.

    ``lengths`` must be sorted ascending (prompt tokens); ``steps[i]`` is request ``i``'s
    decode budget. A batch ``[i, j)`` costs ``cost_s(rows, width=lengths[j-1],
    steps=max(steps[i:j]))``. Returns ``[(i, j), …]`` covering every index once, in order, no
    batch over ``max_batch_size`` rows. Exact (O(n · max_batch_size) cost evaluations).
    """
    n = len(lengths)
    if any(b < a for a, b in itertools.pairwise(lengths)):
        raise ValueError("lengths must be sorted ascending")
    at_least(max_batch_size, 1, "max_batch_size", error=ValueError)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = 0
        for i in range(j - 1, max(-1, j - 1 - max_batch_size), -1):  # batch [i, j)
            longest = max(longest, steps[i])
            total = best[i] + cost_s(j - i, lengths[j - 1], longest)
            if total < best[j]:
                best[j], cut[j] = total, i
    out: list[tuple[int, int]] = []
    j = n
    while j > 0:
        out.append((cut[j], j))
        j = cut[j]
    return out[::-1]
