"""Assemble a profile cell's result from its measured phases.

Turns :class:`PhaseMeasurement` objects into the object ``joulebench profile --json`` prints (and
the store keeps as the cell's ``result``; ``analysis/records.py`` reads it): per-phase sections,
the subtraction method, normalizations (per request, per effective / computed input token, per
output token), latency, roofline, audits, the phase-consistency check and the repeat rows.

Phase consistency. The direct phases time the model's work: a prefill forward, and decode steps
doing the per-token work of a real greedy decode (see :mod:`joulebench.profile.ops`). A full
``generate`` also runs its own Python machinery (config validation, logits-processor and
stopping-criteria set-up per call; input preparation and kwargs bookkeeping per step). That
machinery is measured apart, as its own labelled figure (``generate_overhead``: seconds and
joules per call and per step, from the time each operation spends outside the model's forward),
and the check compares direct prefill + decode + that overhead with generate(N): like with like,
so a direct path that does different model work still fails, whatever the cause.

Method labels. Every phase section says which method produced it (``method``); the headline
``prefill`` / ``decode`` come from the direct windows when they ran (``headline_method``) and
then carry the study's subtraction figure beside them (``subtraction_energy_j``, …).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from typing_extensions import NotRequired, TypedDict

from joulebench.analysis import audit
from joulebench.analysis.stats import Summary
from joulebench.profile.phases import PhaseMeasurement
from joulebench.results.cell import (
    CellHeader,
    CellResult,
    Consistency,
    ForwardClockRecord,
    GenerateOverhead,
    Latency,
    Normalized,
    PhaseSection,
    Roofline,
    SubtractionSections,
    TokenCounts,
    Warmups,
)

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


def div(a: float | None, b: float) -> float | None:
    return None if a is None or not b else a / b


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of one pass over the prompt set."""

    n_requests: int
    n_batches: int
    input_effective: int
    input_computed: int
    decode_output: int
    decode_steps: int

    @property
    def output(self) -> int:
        return self.decode_output + self.n_requests  # the prefill produces one token per row

    def to_dict(self) -> TokenCounts:
        return {
            "input_effective": self.input_effective,
            "input_computed": self.input_computed,
            "output": self.output,
            "decode_output": self.decode_output,
        }


def phase_section(m: PhaseMeasurement, tokens: int, kind: str) -> PhaseSection:
    """One phase's summary over its repeats; per-token figures on the ``kind`` token basis."""
    e, net, lat = m.energy, m.net_energy, m.latency
    warmups: Warmups = {"n": len(m.warmups), "latency_s": [w.latency_s for w in m.warmups]}
    if m.warmup_stop is not None:
        warmups.update(m.warmup_stop.to_dict())
    return {
        "method": m.method,
        "energy_j": None if e is None else e.mean,
        "energy_std_j": None if e is None else e.std,
        "energy_ci95_j": None if e is None else e.ci_halfwidth,
        "ci_halfwidth_rel": None if e is None else e.ci_halfwidth_rel,
        "net_energy_j": None if net is None else net.mean,
        "latency_s": lat.mean,
        "latency_std_s": lat.std,
        "energy_per_token_j": div(None if e is None else e.mean, tokens),
        "net_energy_per_token_j": div(None if net is None else net.mean, tokens),
        "per_token_basis": kind,
        "repeats": len(m.repeats),
        "converged": m.converged,
        "ops_per_window": [r.n_ops for r in m.repeats],
        "min_window_s": m.min_window_s,
        "warmups": warmups,
        "domains": m.per_domain_mean(),
        "host": m.host,
    }


def subtracted_section(gen1: PhaseMeasurement, genn: PhaseMeasurement, tokens: int) -> PhaseSection:
    """decode = generate(N) − generate(1); CI half-widths combined in quadrature."""
    e1, en = gen1.energy, genn.energy
    n1, nn = gen1.net_energy, genn.net_energy
    energy = None if e1 is None or en is None else en.mean - e1.mean
    net = None if n1 is None or nn is None else nn.mean - n1.mean
    half = None
    if e1 and en and e1.ci_halfwidth is not None and en.ci_halfwidth is not None:
        half = math.hypot(e1.ci_halfwidth, en.ci_halfwidth)
    return {
        "method": "subtraction",
        "energy_j": energy,
        "energy_ci95_j": half,
        "ci_halfwidth_rel": None if half is None or not energy else half / abs(energy),
        "net_energy_j": net,
        "latency_s": genn.latency.mean - gen1.latency.mean,
        "energy_per_token_j": div(energy, tokens),
        "net_energy_per_token_j": div(net, tokens),
        "per_token_basis": "decode_output_token",
        "repeats": len(genn.repeats),
        "converged": gen1.converged and genn.converged,
    }


def phase_audits(
    m: PhaseMeasurement,
    idle_w: float | None,
    floor_s: float | None,
    update_period_s: float,
    quiet_cores: float = 0.05,
) -> list[audit.AuditCheck]:
    """Energy ≥ idle × duration, ≥ idle × roofline floor, window ≥ update period, domains sum,
    CI target reached, and a quiet host (when it was watched)."""
    scope = f"{m.phase}/{m.method}"
    e: Summary | None = m.energy
    op_window_s = sum(r.duration_s / r.n_ops for r in m.repeats) / len(m.repeats)
    ops = sum(r.n_ops for r in m.repeats) / len(m.repeats)
    resolution_j = (idle_w or 0.0) * update_period_s / ops  # one counter tick per window, per op
    checks = [
        audit.energy_above_idle(
            None if e is None else e.mean,
            idle_w,
            op_window_s,
            scope=scope,
            resolution_j=resolution_j,
        ),
        audit.energy_above_floor(None if e is None else e.mean, idle_w, floor_s, scope=scope),
        audit.window_long_enough(m.shortest_window_s, update_period_s, scope=scope),
    ]
    if m.ci_target is not None and m.max_repeats is not None:
        rel = None if e is None else e.ci_halfwidth_rel
        checks.append(
            audit.precision_reached(rel, m.ci_target, len(m.repeats), m.max_repeats, scope=scope)
        )
    if m.host is not None:
        hosts = [r.host for r in m.repeats if r.host is not None]
        checks.append(audit.quiet_host(hosts, max_other_cores=quiet_cores, scope=scope))
    per_domain = [d["energy_j"] for d in m.per_domain_mean() if d["energy_j"] is not None]
    if e is not None and per_domain:
        checks.append(
            audit.attribution_sum(per_domain, e.mean, rel_tol=1e-6, scope=f"{scope}:domains")
        )
    return checks


def normalizations(pre: PhaseSection, dec: PhaseSection, t: Tokens) -> Normalized:
    pre_e, dec_e = pre["energy_j"], dec["energy_j"]
    total = None if pre_e is None or dec_e is None else pre_e + dec_e
    return {
        "per_request_j": div(total, t.n_requests),
        "per_effective_input_token_j": div(pre_e, t.input_effective),
        "per_computed_input_token_j": div(pre_e, t.input_computed),
        "per_output_token_j": div(total, t.output),
    }


def latency_section(pre: PhaseSection, dec: PhaseSection, t: Tokens, device: Any) -> Latency:
    pre_lat, dec_lat = pre["latency_s"], dec["latency_s"]
    return {
        "ttft_s": pre_lat / t.n_batches,
        "decode_s_per_token": div(dec_lat, t.decode_steps) if t.decode_steps else None,
        "total_s": pre_lat + dec_lat,
        "timer": "cuda_events" if getattr(device, "type", "") == "cuda" else "perf_counter+sync",
    }


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
    pre, dec, g1, gn = (float(x or 0.0) for x in outside)
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


def consistency_section(
    measured: Mapping[str, PhaseMeasurement],
    t: Tokens,
    tolerance: float,
    *,
    compiled: bool = False,
    clocks: Mapping[str, ForwardClockRecord] | None = None,
) -> tuple[Consistency, audit.AuditCheck]:
    """Direct prefill + decode + generate()'s measured overhead vs a full generate(N).

    What is compared: the direct windows time the model's work; a ``generate`` adds its own
    machinery. That machinery is measured apart (:func:`generate_overhead`, from the time
    outside the forward) and added to the direct phases before the comparison, so the check
    compares the model work done inside each: a direct path that does more or less forward
    work than ``generate`` fails, and so does a negative overhead (the direct path doing work
    outside the forward that ``generate`` does not). Without clocks the overhead is unknown and
    the direct phases are compared with generate alone.

    ``compiled``: direct decode ran compiled on a static cache while ``generate`` is eager, so
    the gap also holds the compile effect.
    """
    pre_e, dec_e, gen_e = (measured[k].energy for k in ("prefill", "decode", "generate_n"))
    overhead = None if clocks is None else generate_overhead(measured, t, clocks)
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
    note = f"{what} is {signed:+.1%} from generate in energy, {(latency_rel or 0.0):+.1%} in time"
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
    return note + (
        f", beyond its 95 % interval (±{spread or 0.0:.1%}) and the ±{tolerance:.1%} "
        "tolerance together: the direct windows "
        "and generate do not do the same model work (or the host changed between "
        "them); check the meter, the window lengths and quiet_host"
    )


def repeat_rows(measured: Mapping[str, PhaseMeasurement], t: Tokens) -> list[dict[str, Any]]:
    """Every warm-up and repeat as a store row, with the tokens one op covers."""
    tokens = {
        "prefill": {"input_effective": t.input_effective, "input_computed": t.input_computed},
        "decode": {"decode_output": t.decode_output},
        "generate_1": {"input_effective": t.input_effective, "output": t.n_requests},
        "generate_n": {"input_effective": t.input_effective, "output": t.output},
    }
    rows: list[dict[str, Any]] = []
    for key, m in measured.items():
        rows.extend(r.to_row(tokens[key]) for r in [*m.warmups, *m.repeats])
    return rows


def phase_floors(roof: Mapping[str, Any]) -> dict[str, float | None]:
    """Roofline time floor per measured key (generate(N) = prefill + decode floors)."""
    pre = roof["prefill"]["time_floor_s"] if "prefill" in roof else None
    dec = roof["decode"]["time_floor_s"] if "decode" in roof else None
    return {
        "prefill": pre,
        "decode": dec,
        "generate_1": pre,
        "generate_n": None if pre is None or dec is None else pre + dec,
    }


def assemble(
    measured: Mapping[str, PhaseMeasurement],
    t: Tokens,
    *,
    method: str,
    consistency_tolerance: float,
    compiled: bool = False,
    device: Any,
    roofline_for: Callable[[dict[str, float]], Roofline],
    idle_w: float | None,
    update_period_s: float,
    header: CellHeader,
    quiet_cores: float = 0.05,
    clocks: Mapping[str, ForwardClockRecord] | None = None,
) -> tuple[CellResult, list[audit.AuditCheck]]:
    """The result object (``header`` first) and its audit checks.

    ``clocks``: each measurement's forward clock (``ForwardClock.to_dict()`` by key), from which
    generate()'s overhead is measured (``generate_overhead``) when both methods ran.

    ``roofline_for(measured_s)`` returns the roofline section given the measured seconds per
    phase (``{"prefill": s, "decode": s}``), or ``{"available": False, "reason": …}``.
    """
    ph = _phase_sections(measured, t)
    pre, dec = ph.headline["prefill"], ph.headline["decode"]
    _per_token(pre, dec, t)
    roof = roofline_for({"prefill": pre["latency_s"], "decode": dec["latency_s"]})
    checks = _measurement_audits(measured, roof, header, idle_w, update_period_s, quiet_cores)
    warnings: list[str] = []
    if ph.sub_decode is not None:
        checks.append(_subtraction_audit(ph.sub_decode, warnings))
    both: _BothMethods = {}
    if "prefill" in measured and "generate_n" in measured:
        both, chk = _both_methods(measured, t, consistency_tolerance, compiled, clocks)
        checks.append(chk)
        if not chk.passed:
            warnings.append(f"phase consistency: {chk.detail}")
    out: CellResult = {
        **header,
        "method": method,
        "n_requests": t.n_requests,
        "n_batches": t.n_batches,
        "tokens": t.to_dict(),
        "warnings": warnings,
        **ph.headline,
        "headline_method": "direct" if "prefill" in measured else "subtraction",
        "normalized": normalizations(pre, dec, t),
        "latency": latency_section(pre, dec, t, device),
        "roofline": roof,
        **both,
        "audit": [c.to_dict() for c in checks],
        "audit_passed": all(c.passed for c in checks),
    }
    return out, checks


class _Headline(TypedDict):
    """The headline phases, with generate(N) and the subtraction sections when they ran."""

    prefill: PhaseSection
    decode: PhaseSection
    generate: NotRequired[PhaseSection]
    subtraction: NotRequired[SubtractionSections]


@dataclass(frozen=True, slots=True)
class _Phases:
    headline: _Headline
    sub_decode: PhaseSection | None  # decode by subtraction, when it ran


def _phase_sections(measured: Mapping[str, PhaseMeasurement], t: Tokens) -> _Phases:
    """``prefill`` and ``decode`` (direct when they ran, else by subtraction), ``generate``,
    and ``subtraction`` beside direct ones; with the subtracted decode section when the
    subtraction ran."""
    direct = "prefill" in measured
    if "generate_n" not in measured:
        return _Phases(
            {
                "prefill": phase_section(
                    measured["prefill"], t.input_effective, "effective_input_token"
                ),
                "decode": phase_section(measured["decode"], t.decode_output, "decode_output_token"),
            },
            None,
        )
    sub_prefill = phase_section(measured["generate_1"], t.input_effective, "effective_input_token")
    sub_prefill["method"] = "subtraction"
    sub_decode = subtracted_section(measured["generate_1"], measured["generate_n"], t.decode_output)
    generate = phase_section(measured["generate_n"], t.output, "output_token")
    if not direct:
        return _Phases(  # keys in the order earlier results had them
            {"generate": generate, "prefill": sub_prefill, "decode": sub_decode}, sub_decode
        )
    pre = phase_section(measured["prefill"], t.input_effective, "effective_input_token")
    dec = phase_section(measured["decode"], t.decode_output, "decode_output_token")
    for section, sub in ((pre, sub_prefill), (dec, sub_decode)):  # the study's figure beside
        section["subtraction_energy_j"] = sub["energy_j"]
        section["subtraction_energy_ci95_j"] = sub["energy_ci95_j"]
        section["subtraction_latency_s"] = sub["latency_s"]
        section["subtraction_energy_per_token_j"] = sub["energy_per_token_j"]
    return _Phases(
        {
            "prefill": pre,
            "decode": dec,
            "generate": generate,
            "subtraction": {"prefill": sub_prefill, "decode": sub_decode},
        },
        sub_decode,
    )


def _per_token(pre: PhaseSection, dec: PhaseSection, t: Tokens) -> None:
    """Each headline phase's energy per request and per token it covers, added in place."""
    pre["per_request_j"] = div(pre["energy_j"], t.n_requests)
    dec["per_request_j"] = div(dec["energy_j"], t.n_requests)
    pre["energy_per_effective_input_token_j"] = div(pre["energy_j"], t.input_effective)
    pre["energy_per_computed_input_token_j"] = div(pre["energy_j"], t.input_computed)
    dec["energy_per_output_token_j"] = div(dec["energy_j"], t.decode_output)


def _measurement_audits(
    measured: Mapping[str, PhaseMeasurement],
    roof: Roofline,
    header: CellHeader,
    idle_w: float | None,
    update_period_s: float,
    quiet_cores: float,
) -> list[audit.AuditCheck]:
    """Each measurement's audits (against its roofline floor), then the idle baseline's host."""
    floors = phase_floors(roof) if roof.get("available", True) else {}
    checks: list[audit.AuditCheck] = []
    for key, m in measured.items():
        checks.extend(phase_audits(m, idle_w, floors.get(key), update_period_s, quiet_cores))
    idle_host = (header.get("idle") or {}).get("host")
    if idle_host is not None:  # the baseline every net figure subtracts
        checks.append(audit.quiet_host([idle_host], max_other_cores=quiet_cores, scope="idle"))
    return checks


def _subtraction_audit(sub_decode: PhaseSection, warnings: list[str]) -> audit.AuditCheck:
    """Whether the subtracted decode energy is resolved; a warning when it is not positive."""
    chk = audit.difference_resolved(
        sub_decode["energy_j"], sub_decode["energy_ci95_j"], scope="decode/subtraction"
    )
    if sub_decode["energy_j"] is not None and sub_decode["energy_j"] <= 0:
        warnings.append(f"subtracted decode energy: {chk.detail}")
    return chk


class _BothMethods(TypedDict, total=False):
    """What a cell measured by both methods adds: generate()'s overhead and the consistency
    check."""

    generate_overhead: GenerateOverhead | None
    consistency: Consistency
    consistency_rel_err: float | None


def _both_methods(
    measured: Mapping[str, PhaseMeasurement],
    t: Tokens,
    tolerance: float,
    compiled: bool,
    clocks: Mapping[str, ForwardClockRecord] | None,
) -> tuple[_BothMethods, audit.AuditCheck]:
    """``generate_overhead`` (with clocks), ``consistency`` and ``consistency_rel_err``, and
    the consistency check."""
    section, chk = consistency_section(measured, t, tolerance, compiled=compiled, clocks=clocks)
    both: _BothMethods = {}
    if clocks is not None:
        both["generate_overhead"] = generate_overhead(measured, t, clocks)
    both["consistency"] = section
    both["consistency_rel_err"] = section["rel_err"]
    return both, chk


def batch_shapes(batches: Sequence[Any], steps: Sequence[int]) -> list[Any]:
    from joulebench.analysis.roofline import BatchShape

    return [BatchShape(b.size, b.padded_length, s) for b, s in zip(batches, steps, strict=True)]
