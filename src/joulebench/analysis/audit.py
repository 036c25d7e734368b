"""Audit checks: physical plausibility of energy numbers, reusable by profile, measure and serving.

Each check returns an :class:`AuditCheck` ``{name, passed, detail}``. Failing checks are stored
(``ResultStore.add_audits``) and shown by the CLI and the report — never dropped. A check whose
inputs are missing (no idle baseline, no energy because the window was too short) *passes as
not applicable* only when that absence is itself reported elsewhere; otherwise it fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joulebench.results.cell import AuditEntry


@dataclass(frozen=True, slots=True)
class AuditCheck:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> AuditEntry:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def _label(name: str, scope: str | None) -> str:
    return f"{scope}:{name}" if scope else name


def energy_above_idle(
    energy_j: float | None,
    idle_power_w: float | None,
    duration_s: float,
    *,
    scope: str | None = None,
    resolution_j: float = 0.0,
) -> AuditCheck:
    """Gross energy over a window must be at least idle power × its duration.

    A device cannot draw less than when idle while working; a lower number means a wrong meter, a
    wrong window, or energy spread over requests that did not run (the study's 1.1e-3 Wh flaw).
    ``resolution_j`` is the meter's quantization over the window (idle power × update period for a
    counter read at both edges): shortfalls within it are not evidence of anything.
    """
    name = _label("energy_ge_idle_x_duration", scope)
    if energy_j is None:
        return AuditCheck(
            name, False, "no energy reported (window shorter than the meter's update period)"
        )
    if idle_power_w is None:
        return AuditCheck(name, True, "not applicable: no idle baseline measured")
    floor_j = idle_power_w * duration_s - resolution_j
    ok = energy_j >= floor_j
    detail = (
        f"{energy_j:.4g} J {'≥' if ok else '<'} idle {idle_power_w:.4g} W × {duration_s:.4g} s "
        f"= {idle_power_w * duration_s:.4g} J"
    )
    if resolution_j:
        detail += f" (meter resolution {resolution_j:.3g} J)"
    return AuditCheck(name, ok, detail)


def energy_above_floor(
    energy_j: float | None,
    idle_power_w: float | None,
    time_floor_s: float | None,
    *,
    scope: str | None = None,
) -> AuditCheck:
    """Energy per operation must be at least idle power × the roofline time floor of the work.

    No hardware can do the work faster than its roofline floor, and it draws at least idle power
    meanwhile, so a lower energy is impossible.
    """
    name = _label("energy_ge_idle_x_time_floor", scope)
    if energy_j is None:
        return AuditCheck(
            name, False, "no energy reported (window shorter than the meter's update period)"
        )
    if idle_power_w is None or time_floor_s is None:
        return AuditCheck(name, True, "not applicable: no idle baseline or no roofline floor")
    floor_j = idle_power_w * time_floor_s
    ok = energy_j >= floor_j
    detail = (
        f"{energy_j:.4g} J {'≥' if ok else '<'} idle {idle_power_w:.4g} W × floor "
        f"{time_floor_s:.4g} s = {floor_j:.4g} J"
    )
    return AuditCheck(name, ok, detail)


def window_long_enough(
    duration_s: float, update_period_s: float, *, scope: str | None = None
) -> AuditCheck:
    """A measurement window must last at least the meter's update period."""
    name = _label("window_ge_update_period", scope)
    ok = duration_s >= update_period_s
    detail = f"window {duration_s:.4g} s {'≥' if ok else '<'} update period {update_period_s:.4g} s"
    return AuditCheck(name, ok, detail)


def phase_consistency(
    prefill_j: float | None,
    decode_j: float | None,
    full_j: float | None,
    *,
    tolerance: float = 0.05,
    scope: str | None = None,
    overhead_j: float | None = None,
) -> tuple[AuditCheck, float | None]:
    """prefill + decode (direct) [+ generate()'s measured overhead] must match a full generate
    within ``tolerance`` (relative).

    ``overhead_j``: what ``generate`` spends beyond the model's work, measured apart; it is
    added to the direct phases. generate()'s machinery can only cost, so an overhead below
    ``-tolerance`` × the full generate fails too: the direct path then does work generate does
    not. Returns the check and the relative error (``None`` when it cannot be computed).
    """
    name = _label("phase_consistency", scope)
    if prefill_j is None or decode_j is None or full_j is None or full_j == 0:
        return AuditCheck(name, False, "cannot compare: a phase has no energy"), None
    extra = overhead_j or 0.0
    predicted = prefill_j + decode_j + extra
    rel = abs(predicted - full_j) / abs(full_j)
    ok = rel <= tolerance
    terms = f"prefill {prefill_j:.4g} J + decode {decode_j:.4g} J"
    if overhead_j is not None:
        terms += f" + generate overhead {overhead_j:.4g} J"
    detail = (
        f"{terms} = {predicted:.4g} J vs full generate {full_j:.4g} J: "
        f"{rel:.1%} {'≤' if ok else '>'} {tolerance:.0%}"
    )
    if overhead_j is not None and overhead_j < -tolerance * abs(full_j):
        ok = False
        detail += (
            f"; generate overhead {overhead_j:.4g} J < 0: the direct path does work outside the "
            "forward that generate does not"
        )
    return AuditCheck(name, ok, detail), rel


def difference_resolved(
    energy_j: float | None,
    ci_halfwidth_j: float | None,
    *,
    what: str = "generate(N) − generate(1)",
    scope: str | None = None,
) -> AuditCheck:
    """An energy obtained as a difference of two measurements must be positive and outside its
    95 % CI of zero; otherwise it is noise, not the energy of the subtracted work."""
    name = _label("difference_resolved", scope)
    if energy_j is None:
        return AuditCheck(name, False, f"cannot compute {what}: a term has no energy")
    if energy_j <= 0:
        return AuditCheck(
            name,
            False,
            f"{what} = {energy_j:.4g} J ≤ 0: the subtracted work is not resolved "
            "(measurement noise exceeds it; use longer outputs or more repeats)",
        )
    if ci_halfwidth_j is not None and ci_halfwidth_j >= energy_j:
        return AuditCheck(
            name,
            False,
            f"{what} = {energy_j:.4g} J ± {ci_halfwidth_j:.4g} J (95 % CI) includes zero: "
            "not resolved",
        )
    ci = "" if ci_halfwidth_j is None else f" ± {ci_halfwidth_j:.4g} J"
    return AuditCheck(name, True, f"{what} = {energy_j:.4g} J{ci} > 0")


def attribution_sum(
    parts_j: Iterable[float],
    total_j: float,
    *,
    rel_tol: float = 1e-6,
    abs_tol_j: float = 1e-9,
    scope: str | None = None,
) -> AuditCheck:
    """Attributed energies (per request, per domain, per slice) must sum to the measured total."""
    name = _label("attribution_sum", scope)
    parts = [float(p) for p in parts_j]
    s = math.fsum(parts)
    ok = math.isclose(s, total_j, rel_tol=rel_tol, abs_tol=abs_tol_j)
    negative = sum(1 for p in parts if p < 0)
    if negative:
        ok = False
    detail = f"{len(parts)} parts sum to {s:.6g} J vs total {total_j:.6g} J"
    if negative:
        detail += f"; {negative} negative part(s)"
    return AuditCheck(name, ok, detail)


def quiet_host(
    windows: Sequence[Mapping[str, object]],
    *,
    max_other_cores: float = 0.05,
    scope: str | None = None,
) -> AuditCheck:
    """Other processes must have used at most ``max_other_cores`` on average in every window.

    ``windows`` are host records (``other_cores``, optional ``gpu_processes``) of the windows a
    figure comes from, the idle baseline included. A busy neighbour shares the CPU, the caches and
    the package power with the measured work: such a number is not the work's alone.
    """
    name = _label("quiet_host", scope)
    if not windows:
        return AuditCheck(name, False, "host not watched: other processes' use is unknown")
    cores = [float(w["other_cores"]) for w in windows]  # type: ignore[arg-type]
    # a share within the CPU-time counters' resolution of the limit is not evidence of a neighbour
    res = [float(w.get("resolution_cores") or 0.0) for w in windows]  # type: ignore[arg-type]
    busy = [c for c, r in zip(cores, res, strict=True) if c - r > max_other_cores]
    gpu = sorted({str(p) for w in windows for p in w.get("gpu_processes") or []})  # type: ignore[attr-defined]
    ok = not busy and not gpu
    detail = (
        f"other processes: {max(cores):.3f} cores at most, {sum(cores) / len(cores):.3f} on "
        f"average over {len(cores)} window(s); {len(busy)} above {max_other_cores:g}"
    )
    if any(res):
        detail += f" (counter resolution ±{max(res):.3f} cores)"
    if gpu:
        detail += f"; foreign GPU processes: {', '.join(gpu)}"
    return AuditCheck(name, ok, detail)


def precision_reached(
    ci_halfwidth_rel: float | None,
    ci_target: float,
    repeats: int,
    max_repeats: int,
    *,
    scope: str | None = None,
) -> AuditCheck:
    """The repeats must have reached the 95 % CI target, not merely stopped at the cap."""
    name = _label("precision_reached", scope)
    ok = ci_halfwidth_rel is not None and ci_halfwidth_rel <= ci_target
    ci = "no interval" if ci_halfwidth_rel is None else f"±{ci_halfwidth_rel:.1%}"
    if ok:
        return AuditCheck(name, True, f"{ci} ≤ target ±{ci_target:.1%} after {repeats} repeats")
    return AuditCheck(
        name,
        False,
        f"{ci} > target ±{ci_target:.1%}: stopped at {repeats} of --max-repeats {max_repeats} "
        "(raise --max-repeats or --min-window-s, or quiet the host)",
    )


def measured_not_estimated(methods: Mapping[str, str], *, scope: str | None = None) -> AuditCheck:
    """Every energy domain was read from a sensor, none modelled by the estimator."""
    estimated = sorted(d for d, m in methods.items() if m == "estimated")
    if not estimated:
        return AuditCheck(
            _label("measured_not_estimated", scope), True, "every domain read from a sensor"
        )
    which = "every domain" if len(estimated) == len(methods) else ", ".join(estimated)
    return AuditCheck(
        _label("measured_not_estimated", scope),
        False,
        f"{which} ESTIMATED by a model, not measured by a sensor",
    )


def run_complete(interrupted: bool, *, scope: str | None = None) -> AuditCheck:
    """The measured work ran to its end (not cut short by Ctrl-C or a signal)."""
    detail = "interrupted: partial measurement" if interrupted else "ran to completion"
    return AuditCheck(_label("complete", scope), not interrupted, detail)


def command_checks(result: Any, *, interrupted: bool) -> list[AuditCheck]:
    """Every check on a ``measure`` window (a :class:`~joulebench.meters.window.WindowResult`)."""
    info = result.meter
    checks = [window_long_enough(result.duration_s, info.update_period_s, scope="measure")]
    if result.net_energy_j is not None:
        checks.append(
            energy_above_idle(
                result.gross_energy_j,
                result.idle_power_w,
                result.duration_s,
                scope="measure",
                resolution_j=(result.idle_power_w or 0.0) * info.update_period_s,
            )
        )
    checks.append(measured_not_estimated(info.methods, scope="measure"))
    checks.append(run_complete(interrupted, scope="measure"))
    return checks


def failing(checks: Sequence[AuditCheck | Mapping[str, object]]) -> list[dict[str, object]]:
    """The failing checks, as dicts (accepts checks or their dict form)."""
    out = []
    for c in checks:
        d = dict(c.to_dict() if isinstance(c, AuditCheck) else c)
        if not d["passed"]:
            out.append(d)
    return out


#: Relative tolerance of :func:`server_energy_agrees`: an engine's own energy figure and the
#: client-side meter's figure for the same scope must agree within it.
SERVER_ENERGY_TOLERANCE = 0.10


def server_energy_agrees(
    server_j: float | None,
    reference_j: float | None,
    *,
    what: str,
    tolerance: float = SERVER_ENERGY_TOLERANCE,
    upper_bound_only: bool = False,
    scope: str | None = None,
    resolution: float = 0.0,
    resolution_why: str = "",
) -> AuditCheck:
    """The energy an engine reports about itself must match the meter's energy over the same scope.

    ``what`` says which scope both figures cover (the engine's own words for its figure, and how
    the reference was cut from the meter's timeline). ``upper_bound_only``: the scopes are not
    known to be the same, so only ``server ≤ reference × (1 + tolerance)`` is checked (an engine
    cannot have used more than the meter measured over everything it could have counted).
    ``resolution``: the relative error the counters' quantization alone can cause (a counter that
    moves every 100 ms cannot split 0.8 s of work finer than one step, 12 %); it is added to
    ``tolerance`` and stated with ``resolution_why``, so a short load is not failed for it.
    """
    name = _label("server_energy_vs_meter", scope)
    if server_j is None:
        return AuditCheck(name, True, "not applicable: the engine reported no energy")
    if reference_j is None or reference_j <= 0:
        return AuditCheck(
            name, False, f"engine reports {server_j:.4g} J but the meter has no figure for {what}"
        )
    ratio = server_j / reference_j
    limit = tolerance + max(resolution, 0.0)
    stated = f"±{tolerance:.0%}"
    if resolution > 0:
        stated = f"±{limit:.0%} ({tolerance:.0%} + {resolution:.0%} counter resolution: {resolution_why})"
    if upper_bound_only:
        ok = ratio <= 1 + limit
        detail = (
            f"engine {server_j:.4g} J vs meter {reference_j:.4g} J ({what}): ratio {ratio:.3f} "
            f"{'≤' if ok else '>'} {1 + limit:.2f} (scopes not known to match: upper bound only"
            f"{'; ' + stated if resolution > 0 else ''})"
        )
        return AuditCheck(name, ok, detail)
    ok = abs(ratio - 1) <= limit
    detail = (
        f"engine {server_j:.4g} J vs meter {reference_j:.4g} J ({what}): "
        f"{ratio - 1:+.1%}, {'within' if ok else 'outside'} {stated}"
    )
    return AuditCheck(name, ok, detail)
