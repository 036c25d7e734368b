"""Assemble a profile cell's result from its measured phases.

Turns :class:`PhaseMeasurement` objects into the object ``joulebench profile --json`` prints (and
the store keeps as the cell's ``result``; ``analysis/records.py`` reads it): per-phase sections,
the subtraction method, normalizations (per request, per effective / computed input token, per
output token), latency, roofline, audits and the repeat rows; the phase-consistency check and
generate()'s overhead come from :mod:`joulebench.profile.consistency`.

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
from joulebench.profile.consistency import BothMethods, both_methods
from joulebench.profile.phases import PhaseMeasurement
from joulebench.profile.tokens import Tokens, div
from joulebench.results.cell import (
    CellHeader,
    CellResult,
    ForwardClockRecord,
    Latency,
    Normalized,
    PhaseSection,
    Roofline,
    SubtractionSections,
    Warmups,
)


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
    both: BothMethods = {}
    if "prefill" in measured and "generate_n" in measured:
        both, chk = both_methods(measured, t, consistency_tolerance, compiled, clocks)
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
    direct = _direct_sections(measured, t) if "prefill" in measured else None
    if "generate_n" not in measured:
        if direct is None:
            raise ValueError("no phase measured: neither direct prefill nor generate(N)")
        return _Phases({"prefill": direct[0], "decode": direct[1]}, None)
    sub_prefill = phase_section(measured["generate_1"], t.input_effective, "effective_input_token")
    sub_prefill["method"] = "subtraction"
    sub_decode = subtracted_section(measured["generate_1"], measured["generate_n"], t.decode_output)
    generate = phase_section(measured["generate_n"], t.output, "output_token")
    if direct is None:
        return _Phases(  # keys in the order earlier results had them
            {"generate": generate, "prefill": sub_prefill, "decode": sub_decode}, sub_decode
        )
    pre, dec = direct
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


def _direct_sections(
    measured: Mapping[str, PhaseMeasurement], t: Tokens
) -> tuple[PhaseSection, PhaseSection]:
    """Direct prefill per effective input token and direct decode per output token."""
    return (
        phase_section(measured["prefill"], t.input_effective, "effective_input_token"),
        phase_section(measured["decode"], t.decode_output, "decode_output_token"),
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


def batch_shapes(batches: Sequence[Any], steps: Sequence[int]) -> list[Any]:
    from joulebench.analysis.roofline import BatchShape

    return [BatchShape(b.size, b.padded_length, s) for b, s in zip(batches, steps, strict=True)]
