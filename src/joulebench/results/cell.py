"""A profile cell's result: the object ``profile --json`` prints and the store keeps.

One type for one JSON object. ``profile.result.assemble`` builds it, ``profile_cell`` returns
it, ``profile --json`` and ``sweep --json`` print it as it is, the store keeps it in the cell's
``result`` column, and ``analysis.records.ProfileCell`` reads it back. The types are
``TypedDict`` s, so the object stays the plain JSON mapping it always was (the same keys, in
the same order, for every existing store and script) while mypy checks each key where it is
written and where it is read; :func:`validate_cell_result` checks a real object against the
same declarations at run time, extra keys refused, so the two cannot drift apart unnoticed.

Sections whose shape belongs to another module stay mappings here: the meter's description
(``meters.base.MeterInfo``), the idle baseline (``meters.window.IdleBaseline``) and the host
watch (``meters.host``), the parsed precision (``workloads.precision``) and the roofline
hardware entry (``analysis.roofline``).
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict

from joulebench.results.typed import check, closed

# Every section is @closed: it refuses keys it does not declare (when validated:
# validate_cell_result).


@closed
class AuditEntry(TypedDict):
    """One audit check (``analysis.audit.AuditCheck.to_dict``), named ``phase/method:check``."""

    name: str
    passed: bool
    detail: str


@closed
class WarmupStopRecord(TypedDict):
    """``profile.phases.WarmupStop.to_dict``: how many warm-ups ran, the cap, the rule and why
    they stopped."""

    rule: str
    cap: int
    n: int
    stopped: str
    settle_rel: float | None


@closed
class Warmups(TypedDict):
    """The warm-ups a phase ran before its windows, and why they stopped."""

    n: int
    latency_s: list[float]
    rule: NotRequired[str]
    cap: NotRequired[int]
    stopped: NotRequired[str]
    settle_rel: NotRequired[float | None]


@closed
class DomainMean(TypedDict):
    """Mean per-op energy of one meter domain (``cpu:0``, ``gpu:1``, ``ram``)."""

    name: str
    method: str
    energy_j: float | None
    net_energy_j: float | None


@closed
class PhaseSection(TypedDict):
    """One phase over its repeats: measured directly, by subtraction, or a whole generate(N).

    Every section has the keys without ``NotRequired``. A measured phase adds its spread, its
    windows, warm-ups, domains and host; the subtracted decode (generate(N) − generate(1)) has
    none of those. The headline ``prefill`` / ``decode`` add their per-request and per-token
    figures and, beside direct ones, the study's subtraction figure (``subtraction_*``).
    """

    method: str
    energy_j: float | None
    energy_ci95_j: float | None
    ci_halfwidth_rel: float | None
    net_energy_j: float | None
    latency_s: float
    energy_per_token_j: float | None
    net_energy_per_token_j: float | None
    per_token_basis: str
    repeats: int
    converged: bool
    energy_std_j: NotRequired[float | None]
    latency_std_s: NotRequired[float | None]
    ops_per_window: NotRequired[list[int]]
    min_window_s: NotRequired[float]
    warmups: NotRequired[Warmups]
    domains: NotRequired[list[DomainMean]]
    host: NotRequired[dict[str, Any] | None]
    subtraction_energy_j: NotRequired[float | None]
    subtraction_energy_ci95_j: NotRequired[float | None]
    subtraction_latency_s: NotRequired[float | None]
    subtraction_energy_per_token_j: NotRequired[float | None]
    per_request_j: NotRequired[float | None]
    energy_per_effective_input_token_j: NotRequired[float | None]
    energy_per_computed_input_token_j: NotRequired[float | None]
    energy_per_output_token_j: NotRequired[float | None]


@closed
class SubtractionSections(TypedDict):
    """The study's subtraction method, kept beside direct headline phases."""

    prefill: PhaseSection
    decode: PhaseSection


@closed
class TokenCounts(TypedDict):
    """Tokens of one pass over the prompt set."""

    input_effective: int
    input_computed: int
    output: int
    decode_output: int


@closed
class Normalized(TypedDict):
    """The headline energy per request and per token (J)."""

    per_request_j: float | None
    per_effective_input_token_j: float | None
    per_computed_input_token_j: float | None
    per_output_token_j: float | None


@closed
class Latency(TypedDict):
    """Time to first token, per decode token and in all, and the timer that measured them."""

    ttft_s: float
    decode_s_per_token: float | None
    total_s: float
    timer: str


@closed
class RooflinePhase(TypedDict):
    """One phase against the hardware's peaks."""

    flops: float
    bytes: float
    arithmetic_intensity: float | None
    bound: str
    time_floor_s: float
    measured_s: NotRequired[float | None]
    efficiency: NotRequired[float | None]


@closed
class Roofline(TypedDict):
    """The cell's roofline, or ``available: False`` with the reason."""

    available: NotRequired[bool]
    reason: NotRequired[str]
    hardware: NotRequired[dict[str, Any]]
    precision: NotRequired[str]
    compute_dtype: NotRequired[str]
    kv_dtype: NotRequired[str]
    kv_dtype_source: NotRequired[str]
    peak_flops_per_s: NotRequired[float]
    bandwidth_bytes_s: NotRequired[float]
    prefill: NotRequired[RooflinePhase]
    decode: NotRequired[RooflinePhase]


@closed
class ForwardClockRecord(TypedDict):
    """``profile.ops.ForwardClock.to_dict``: how long one measurement's ops spent in and out of
    the model's forward."""

    calls: int
    calls_per_op: int
    ops: float
    op_s: float
    forward_s: float
    forwards: int
    outside_forward_per_op_s: float | None


@closed
class GenerateOverhead(TypedDict):
    """generate()'s own machinery, in seconds and joules per call and per step."""

    per_call_s: float
    per_step_s: float | None
    per_call_j: float | None
    per_step_j: float | None
    total_s: float
    total_j: float | None
    share_of_generate: float | None
    power_w: float | None
    method: str
    note: str
    clocks: dict[str, ForwardClockRecord]


@closed
class Consistency(TypedDict):
    """Direct prefill + decode (+ generate()'s overhead) against a full generate(N)."""

    compared: str
    rel_err: float | None
    signed_rel_err: float | None
    tolerance: float
    gap_ci95_rel: float | None
    passed: bool
    direct_energy_j: float | None
    generate_overhead_j: float | None
    predicted_energy_j: float | None
    generate_energy_j: float | None
    direct_latency_s: float
    generate_overhead_s: float | None
    predicted_latency_s: float
    generate_latency_s: float
    latency_rel_err: float | None
    direct_decode_compiled: bool
    direct_decode_does: list[str]
    generate_only: list[str]
    note: NotRequired[str]


@closed
class Window(TypedDict):
    """The window length every measurement of the cell used, and the rule that chose it."""

    min_window_s: float
    rule: str


@closed
class CellHeader(TypedDict):
    """What describes the cell, before anything it measured."""

    model: str
    precision: dict[str, Any]
    device: str
    config: dict[str, Any]
    padding_ratio: float
    output_length: dict[str, Any]
    meter: dict[str, Any]
    meter_methods: dict[str, str]
    estimated: bool
    idle: dict[str, Any]
    window: Window


@closed
class CellResult(CellHeader):
    """The whole result of one profile cell (``profile --json``; the store's ``result``).

    ``prefill`` and ``decode`` are the headline phases (``headline_method`` says which method);
    ``generate`` and ``subtraction`` exist when the subtraction method ran, ``consistency`` and
    ``generate_overhead`` when both methods did. ``cell_key`` is set once the cell is recorded,
    ``run_id`` when it was stored, ``worker`` by a fanned-out sweep's worker.
    """

    method: str
    n_requests: int
    n_batches: int
    tokens: TokenCounts
    warnings: list[str]
    prefill: PhaseSection
    decode: PhaseSection
    generate: NotRequired[PhaseSection]
    subtraction: NotRequired[SubtractionSections]
    headline_method: str
    normalized: Normalized
    latency: Latency
    roofline: Roofline
    generate_overhead: NotRequired[GenerateOverhead | None]
    consistency: NotRequired[Consistency]
    consistency_rel_err: NotRequired[float | None]
    audit: list[AuditEntry]
    audit_passed: bool
    cell_key: NotRequired[str]
    run_id: NotRequired[str | None]
    worker: NotRequired[dict[str, Any]]  # the process that measured it, in a fanned-out sweep


def validate_cell_result(obj: object) -> CellResult:
    """``obj`` checked against :class:`CellResult`, every nested section included; a key the
    declarations do not name, or a value of the wrong type, raises pydantic's
    ``ValidationError``. Returns the same object, typed."""
    return check(CellResult, obj)
