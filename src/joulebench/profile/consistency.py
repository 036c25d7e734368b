"""Phase consistency and generate()'s own overhead, for a cell measured by both methods.

The direct phases time the model's work: a prefill forward, and decode steps doing the
per-token work of a real greedy decode (see :mod:`joulebench.profile.ops`). A full ``generate``
also runs its own Python machinery (config validation, logits-processor and stopping-criteria
set-up per call; input preparation and kwargs bookkeeping per step). That machinery is measured
apart, as its own labelled figure (:func:`generate_overhead`: seconds and joules per call and per
step, from the time each operation spends outside the model's forward), and the check compares
direct prefill + decode + that overhead with generate(N): like with like, so a direct path that
does different model work still fails, whatever the cause.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from typing_extensions import TypedDict

from joulebench.analysis import audit
from joulebench.analysis.stats import Summary
from joulebench.profile.phases import PhaseMeasurement
from joulebench.profile.tokens import Tokens, div
from joulebench.results.cell import Consistency, ForwardClockRecord, GenerateOverhead

#: The per-token work direct decode does, as ``generate``'s greedy loop does it.
DIRECT_DECODE_DOES = (
    "forward of one token per row with a growing attention mask and KV cache",
    "copy of the last logits to fp32",
    "EOS suppression while min_new_tokens is not reached (forced lengths)",
    "greedy argmax",
    "pad token for rows that already finished",
    "store of the token and EOS check per row",
    "stop check when every row has finished (a host read per step)",
    "the token fed back as the next input",
)
#: What only ``generate`` does; excluded from the direct windows by design.
GENERATE_ONLY = (
    "per call: generation-config validation, logits-processor / stopping-criteria / cache set-up",
    "per step: prepare_inputs_for_generation and _update_model_kwargs_for_generation",
    "per step: logits-processor dispatch (signature inspection) and cat onto the whole sequence",
)


def generate_overhead(
    measured: Mapping[str, PhaseMeasurement],
    t: Tokens,
    clocks: Mapping[str, ForwardClockRecord],
) -> GenerateOverhead | None:
    """generate()'s own cost, per call and per decode step, in seconds and joules.

    From the :class:`~joulebench.profile.ops.ForwardClock` of each measurement: the seconds a
    ``generate`` spends outside the model's forward, less the seconds the direct path spends
    outside it for the same work (the greedy pick, the stop check). Per call: generate(1) vs the
    direct prefill, per batch; per step: generate(N) − generate(1) vs the direct decode, per
    decode step. Joules: those seconds × the generate(N) window's mean gross power. ``None``
    when a clock is missing (an older caller).
    """
    keys = ("prefill", "decode", "generate_1", "generate_n")
    outside = [clocks[k]["outside_forward_per_op_s"] if k in clocks else None for k in keys]
    if any(x is None for x in outside):
        return None
    pre, dec, g1, gn = (float(x) for x in outside if x is not None)
    per_call_s = (g1 - pre) / t.n_batches
    per_step_s = div((gn - g1) - dec, t.decode_steps)
    total_s = gn - pre - dec
    genn = measured["generate_n"]
    power_w = div(None if genn.energy is None else genn.energy.mean, genn.latency.mean)
    return {
        "per_call_s": per_call_s,
        "per_step_s": per_step_s,
        "per_call_j": None if power_w is None else per_call_s * power_w,
        "per_step_j": None if power_w is None or per_step_s is None else per_step_s * power_w,
        "total_s": total_s,
        "total_j": None if power_w is None else total_s * power_w,
        "share_of_generate": div(total_s, genn.latency.mean),
        "power_w": power_w,
        "method": "forward_clock",
        "note": (
            "seconds generate() spends outside the model's forward (timed by forward hooks in "
            "its own windows), less the direct path's seconds outside the forward, × the "
            "generate(N) window's mean power; per call from generate(1) vs direct prefill, per "
            "step from generate(N) − generate(1) vs direct decode"
        ),
        "clocks": {k: clocks[k].copy() for k in keys},
    }


def _gap_spread(*phases: Summary | None) -> float | None:
    """95 % CI half-width of (prefill + decode − generate), relative to generate.

    The phases are measured in separate windows, so their half-widths add in quadrature.
    ``None`` when a phase has no energy or no spread (one repeat).
    """
    halves = [None if p is None else p.ci_halfwidth for p in phases]
    gen = phases[-1]
    if gen is None or not gen.mean or any(h is None for h in halves):
        return None
    return math.sqrt(math.fsum(h * h for h in halves if h is not None)) / abs(gen.mean)


def _consistency(
    measured: Mapping[str, PhaseMeasurement],
    t: Tokens,
    tolerance: float,
    compiled: bool,
    overhead: GenerateOverhead | None,
) -> tuple[Consistency, audit.AuditCheck]:
    """Direct prefill + decode + generate()'s measured overhead vs a full generate(N).

    What is compared: the direct windows time the model's work; a ``generate`` adds its own
    machinery. That machinery is measured apart (:func:`generate_overhead`, from the time
    outside the forward: ``overhead``) and added to the direct phases before the comparison, so
    the check compares the model work done inside each: a direct path that does more or less
    forward work than ``generate`` fails, and so does a negative overhead (the direct path doing
    work outside the forward that ``generate`` does not). Without clocks (``overhead`` is
    ``None``) the direct phases are compared with generate alone.

    ``compiled``: direct decode ran compiled on a static cache while ``generate`` is eager, so
    the gap also holds the compile effect.
    """
    pre_e, dec_e, gen_e = (measured[k].energy for k in ("prefill", "decode", "generate_n"))
    overhead_j = None if overhead is None else overhead["total_j"]
    chk, rel = audit.phase_consistency(
        None if pre_e is None else pre_e.mean,
        None if dec_e is None else dec_e.mean,
        None if gen_e is None else gen_e.mean,
        tolerance=tolerance,
        overhead_j=overhead_j,
    )
    energy = _energy_compared(pre_e, dec_e, gen_e, overhead_j)
    signed = _signed_gap(energy["predicted_energy_j"], energy["generate_energy_j"])
    spread = _gap_spread(pre_e, dec_e, gen_e)
    section: Consistency = {
        "compared": (
            "direct prefill + direct decode + generate_overhead vs generate(N)"
            if overhead is not None
            else "direct prefill + direct decode vs generate(N) (overhead not measured)"
        ),
        "rel_err": rel,
        "signed_rel_err": signed,
        "tolerance": tolerance,
        "gap_ci95_rel": spread,
        "passed": chk.passed,
        **energy,
        **_latency_compared(measured, overhead),
        "direct_decode_compiled": compiled,
        "direct_decode_does": list(DIRECT_DECODE_DOES),
        "generate_only": list(GENERATE_ONLY),
    }
    if not chk.passed and signed is not None:
        note = _consistency_note(
            signed,
            section["latency_rel_err"],
            overhead_measured=overhead is not None,
            compiled=compiled,
            rel=rel,
            spread=spread,
            tolerance=tolerance,
        )
        section["note"] = note
        chk = audit.AuditCheck(chk.name, chk.passed, f"{chk.detail}; {note}")
    return section, chk


class _EnergyCompared(TypedDict):
    direct_energy_j: float | None
    generate_overhead_j: float | None
    predicted_energy_j: float | None
    generate_energy_j: float | None


class _LatencyCompared(TypedDict):
    direct_latency_s: float
    generate_overhead_s: float | None
    predicted_latency_s: float
    generate_latency_s: float
    latency_rel_err: float | None


def _energy_compared(
    pre_e: Summary | None, dec_e: Summary | None, gen_e: Summary | None, overhead_j: float | None
) -> _EnergyCompared:
    """The consistency check's energies: direct, generate()'s overhead, their sum, generate."""
    direct_j = None if pre_e is None or dec_e is None else pre_e.mean + dec_e.mean
    return {
        "direct_energy_j": direct_j,
        "generate_overhead_j": overhead_j,
        "predicted_energy_j": None if direct_j is None else direct_j + (overhead_j or 0.0),
        "generate_energy_j": None if gen_e is None else gen_e.mean,
    }


def _signed_gap(predicted_j: float | None, generate_j: float | None) -> float | None:
    """(predicted − generate) / generate; ``None`` without both or when generate is 0."""
    if predicted_j is None or not generate_j:
        return None
    return (predicted_j - generate_j) / generate_j


def _latency_compared(
    measured: Mapping[str, PhaseMeasurement], overhead: GenerateOverhead | None
) -> _LatencyCompared:
    """The consistency check's seconds: direct, generate()'s overhead, their sum, generate, and
    the relative gap."""
    direct_s = measured["prefill"].latency.mean + measured["decode"].latency.mean
    overhead_s = 0.0 if overhead is None else overhead["total_s"]
    gen_s = measured["generate_n"].latency.mean
    return {
        "direct_latency_s": direct_s,
        "generate_overhead_s": None if overhead is None else overhead_s,
        "predicted_latency_s": direct_s + overhead_s,
        "generate_latency_s": gen_s,
        "latency_rel_err": div(direct_s + overhead_s - gen_s, gen_s),
    }


def _consistency_note(
    signed: float,
    latency_rel: float | None,
    *,
    overhead_measured: bool,
    compiled: bool,
    rel: float | None,
    spread: float | None,
    tolerance: float,
) -> str:
    """Why a failed consistency check failed, in words: the gap, then its likely cause."""
    what = "direct + overhead" if overhead_measured else "direct"
    in_time = "time not compared" if latency_rel is None else f"{latency_rel:+.1%} in time"
    note = f"{what} is {signed:+.1%} from generate in energy, {in_time}"
    if compiled:
        return note + (
            ": direct decode ran compiled on a static cache, generate eager, so the gap holds "
            "the compile effect"
        )
    if not overhead_measured:
        return note + ": generate()'s overhead was not measured"
    if spread is not None and rel is not None and rel - spread <= tolerance:
        # the gap's own 95 % interval reaches the tolerance band: it cannot be told from a
        # gap inside it (a -16.3 % gap with ±15.9 % reaches -5 %), so neither pass nor fault
        return note + (
            f", but its 95 % interval ({signed:+.1%} ± {spread:.1%}) reaches the "
            f"±{tolerance:.1%} tolerance: no verdict on the work the phases do; more repeats "
            "(--max-repeats), longer windows (--min-window-s) or a quieter host (see "
            "quiet_host) are needed"
        )
    beyond = (
        f"beyond the ±{tolerance:.1%} tolerance (no 95 % interval: too few repeats for one)"
        if spread is None
        else f"beyond its 95 % interval (±{spread:.1%}) and the ±{tolerance:.1%} tolerance together"
    )
    return note + (
        f", {beyond}: the direct windows "
        "and generate do not do the same model work (or the host changed between "
        "them); check the meter, the window lengths and quiet_host"
    )


class BothMethods(TypedDict, total=False):
    """What a cell measured by both methods adds: generate()'s overhead and the consistency
    check."""

    generate_overhead: GenerateOverhead | None
    consistency: Consistency
    consistency_rel_err: float | None


def both_methods(
    measured: Mapping[str, PhaseMeasurement],
    t: Tokens,
    tolerance: float,
    compiled: bool,
    clocks: Mapping[str, ForwardClockRecord] | None,
) -> tuple[BothMethods, audit.AuditCheck]:
    """``generate_overhead`` (with clocks), ``consistency`` and ``consistency_rel_err``, and
    the consistency check."""
    overhead = None if clocks is None else generate_overhead(measured, t, clocks)
    section, chk = _consistency(measured, t, tolerance, compiled, overhead)
    both: BothMethods = {}
    if clocks is not None:
        both["generate_overhead"] = overhead
    both["consistency"] = section
    both["consistency_rel_err"] = section["rel_err"]
    return both, chk
