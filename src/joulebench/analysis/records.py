"""Typed, tolerant views of what the results store holds, for analysis and reports.

The store keeps nested records as JSON (a profile cell's ``result`` is the ``profile --json``
object; a load run's ``summary`` has per-request energies under several accountings). These
views parse them once and answer ``None`` for anything absent, so a report can draw whatever
subset a store holds. Nothing here measures anything.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from joulebench.meters.base import methods_label
from joulebench.results.store import ResultStore

#: The per-request accountings of a load run, in the order reports show them.
ACCOUNTINGS = ("paper_whole_window", "idle_subtracted", "steady_state", "attributed_mean")
PHASES = ("prefill", "decode")
#: Run statuses that mean the run did not finish: reports list such runs, they draw no figure.
UNFINISHED = ("running", "interrupted")


def parse_json(value: Any) -> Any:
    """DuckDB returns JSON columns as text; decode them (``None`` stays ``None``)."""
    if value is None or isinstance(value, dict | list):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def dig(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…`` or ``None`` when any step is missing."""
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def num(obj: Any, *path: str) -> float | None:
    """A finite float at ``path`` or ``None``."""
    value = dig(obj, *path) if path else obj
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Columns:
    """How one store table's columns become a record's fields."""

    text: tuple[str, ...]  # required, read as ``str``
    nullable: tuple[str, ...]  # as stored, ``None`` when absent
    json_objects: tuple[str, ...]  # JSON text decoded, ``{}`` when absent

    def fields(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row``'s values by field name, each column read as its kind says."""
        values: dict[str, Any] = {name: str(row[name]) for name in self.text}
        values.update((name, row.get(name)) for name in self.nullable)
        values.update((name, parse_json(row.get(name)) or {}) for name in self.json_objects)
        return values


#: The ``runs`` and ``cells`` tables, as :class:`RunRecord` and :class:`ProfileCell` read them.
_RUN_COLUMNS = _Columns(
    text=("run_id", "kind", "status"),
    nullable=("name", "created_at"),
    json_objects=("config", "environment", "meter", "summary"),
)
_CELL_COLUMNS = _Columns(
    text=("run_id", "cell_key", "status"),
    nullable=("study", "error"),
    json_objects=("config", "result"),
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    kind: str
    name: str | None
    status: str
    created_at: Any
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    meter: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        return cls(**_RUN_COLUMNS.fields(row))

    @property
    def finished(self) -> bool:
        """The run ended by itself (``done`` or ``failed``; a failing audit changes neither)."""
        return self.status not in UNFINISHED

    @property
    def failed_audits(self) -> list[str]:
        """Names of the audit checks that failed, as the run's summary records them."""
        names = dig(self.summary, "audits", "failed")
        if isinstance(names, list):
            return [str(x) for x in names]
        checks = dig(self.summary, "energy", "audits")
        if isinstance(checks, list):  # summaries written before the top-level verdicts
            return [
                str(a.get("name")) for a in checks if isinstance(a, Mapping) and not a.get("passed")
            ]
        return []

    @property
    def meter_methods(self) -> dict[str, str]:
        found = self.summary.get("meter_methods") or self.meter.get("methods") or {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}

    @property
    def method(self) -> str:
        return methods_label(self.meter_methods)


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """One phase of a profile cell (energies in J per measured operation)."""

    energy_j: float | None
    net_energy_j: float | None
    latency_s: float | None
    energy_per_token_j: float | None
    ci_halfwidth_rel: float | None
    repeats: int | None
    per_request_j: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> PhaseStats | None:
        if not isinstance(d, Mapping):
            return None
        reps = d.get("repeats")
        n = len(reps) if isinstance(reps, list) else (int(reps) if isinstance(reps, int) else None)
        return cls(
            energy_j=num(d, "energy_j"),
            net_energy_j=num(d, "net_energy_j"),
            latency_s=num(d, "latency_s"),
            energy_per_token_j=num(d, "energy_per_token_j"),
            ci_halfwidth_rel=num(d, "ci_halfwidth_rel"),
            repeats=n,
            per_request_j=num(d, "per_request_j"),
        )

    def halfwidth(self, value: float | None) -> float | None:
        """95 % CI half-width of ``value`` (same relative width as the phase energy)."""
        if value is None or self.ci_halfwidth_rel is None:
            return None
        return abs(value) * self.ci_halfwidth_rel


@dataclass(frozen=True, slots=True)
class ProfileCell:
    run_id: str
    cell_key: str
    study: str | None
    status: str
    config: dict[str, Any]
    result: dict[str, Any]
    error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ProfileCell:
        return cls(**_CELL_COLUMNS.fields(row))

    @property
    def ok(self) -> bool:
        return self.status == "done" and bool(self.result)

    @property
    def model(self) -> str:
        m = self.config.get("model")
        if isinstance(m, Mapping):
            m = m.get("name") or m.get("id") or m.get("path")
        return str(m) if m else "?"

    @property
    def precision(self) -> str:
        return str(self.config.get("precision") or self.config.get("dtype") or "?")

    @property
    def batch_size(self) -> int | None:
        b = self.config.get("batch_size")
        return int(b) if isinstance(b, int | float) and not isinstance(b, bool) else None

    @property
    def bucketing(self) -> bool:
        b = self.config.get("bucketing")
        if isinstance(b, str):
            return b.lower() not in ("", "none", "off", "false", "no")
        return bool(b)

    def phase(self, name: str) -> PhaseStats | None:
        return PhaseStats.from_dict(self.result.get(name))

    def tokens(self, key: str) -> float | None:
        return num(self.result, "tokens", key)

    @property
    def padding_ratio(self) -> float | None:
        return num(self.result, "padding_ratio")

    @property
    def method(self) -> str:
        return methods_label(self.result.get("meter_methods"), self.result.get("method"))

    @property
    def label(self) -> str:
        parts = [self.model, self.precision]
        if self.batch_size is not None:
            parts.append(f"b={self.batch_size}")
        if self.bucketing:
            parts.append("bucketed")
        return " · ".join(parts)

    @property
    def n_requests(self) -> int:
        """Requests one measured pass covers (the profiler's ``n_requests``, else batch size)."""
        n = num(self.result, "n_requests")
        return int(n) if n else (self.batch_size or 1)

    def phase_per_request_j(self, name: str) -> float | None:
        """Gross energy of one phase per request (a phase's ``energy_j`` covers every request)."""
        st = self.phase(name)
        if st is None:
            return None
        if st.per_request_j is not None:
            return st.per_request_j
        return None if st.energy_j is None else st.energy_j / self.n_requests

    def per_request_j(self) -> float | None:
        """Prefill + decode gross energy per request."""
        given = num(self.result, "normalized", "per_request_j")
        if given is not None:
            return given
        pre, dec = self.phase_per_request_j("prefill"), self.phase_per_request_j("decode")
        return None if pre is None or dec is None else pre + dec

    def per_request_halfwidth_j(self) -> float | None:
        """95 % CI half-width of :meth:`per_request_j`: the two phases' half-widths in
        quadrature (independent windows); ``None`` when either phase has no CI."""
        pre, dec = self.phase("prefill"), self.phase("decode")
        if pre is None or dec is None:
            return None
        hw = [pre.halfwidth(self.phase_per_request_j("prefill")),
              dec.halfwidth(self.phase_per_request_j("decode"))]  # fmt: skip
        if hw[0] is None or hw[1] is None:
            return None
        return float(math.hypot(hw[0], hw[1]))

    def per_token_j(self) -> dict[str, float | None]:
        """J per effective input token, per computed input token (prefill) and per output token.

        The profiler's explicit keys win; otherwise phase energy ÷ the matching token count.
        """
        pre, dec = self.result.get("prefill"), self.result.get("decode")
        pre_e, dec_e = num(pre, "energy_j"), num(dec, "energy_j")

        def pick(section: Any, key: str, e: float | None, n: float | None) -> float | None:
            given = num(section, key)
            if given is not None:
                return given
            return None if e is None or not n else e / n

        out_tokens = self.tokens("decode_output") or self.tokens("output")
        return {
            "effective_input": pick(
                pre, "energy_per_effective_input_token_j", pre_e, self.tokens("input_effective")
            ),
            "computed_input": pick(
                pre, "energy_per_computed_input_token_j", pre_e, self.tokens("input_computed")
            ),
            "output": pick(dec, "energy_per_output_token_j", dec_e, out_tokens),
        }

    def latency_ms(self) -> tuple[float | None, float | None]:
        """(time to first token per batch in ms, decode ms per token step)."""
        ttft_s = num(self.result, "latency", "ttft_s")
        tpot_s = num(self.result, "latency", "decode_s_per_token")
        if ttft_s is None:
            pre = self.phase("prefill")
            if pre is not None and pre.latency_s is not None:
                ttft_s = pre.latency_s / max(num(self.result, "n_batches") or 1.0, 1.0)
        if tpot_s is None:
            dec, steps = self.phase("decode"), self.tokens("output")
            if dec is not None and dec.latency_s is not None and steps:
                tpot_s = dec.latency_s / (steps / (self.batch_size or 1))
        return (
            None if ttft_s is None else ttft_s * 1000.0,
            None if tpot_s is None else tpot_s * 1000.0,
        )


@dataclass(frozen=True, slots=True)
class LoadRun:
    """A load test (``kind='load'``) with its summary."""

    run: RunRecord

    @property
    def arrival(self) -> str:
        return arrival_label(self.run.config.get("arrival"))

    @property
    def scheduler(self) -> str:
        s = self.run.config.get("scheduler")
        if isinstance(s, Mapping):
            s = s.get("kind") or s.get("name")
        return str(s) if s else "?"

    @property
    def shaped(self) -> bool:
        return bool(self.run.config.get("via_shape"))

    @property
    def label(self) -> str:
        text = f"{self.arrival} · {self.scheduler}"
        return text + (" · shaped" if self.shaped else "")

    def per_request_wh(self, accounting: str) -> float | None:
        return num(self.run.summary, "energy", "per_request_wh", accounting)

    def latency_ms(self, metric: str, pct: str) -> float | None:
        return num(self.run.summary, metric, pct)

    @property
    def requests_ok(self) -> int | None:
        v = num(self.run.summary, "requests", "ok")
        return None if v is None else int(v)

    @property
    def requests_failed(self) -> int | None:
        v = num(self.run.summary, "requests", "failed")
        return None if v is None else int(v)


def arrival_label(arrival: Any) -> str:
    """``fixed 500 ms``, ``uniform U(50, 300) ms``, ``burst``… from a run's arrival config."""
    if arrival is None:
        return "?"
    if not isinstance(arrival, Mapping):
        return str(arrival)
    if arrival.get("spec"):
        return str(arrival["spec"])
    kind = str(arrival.get("kind") or arrival.get("name") or "?")
    interval_ms = num(arrival, "interval_ms")
    if interval_ms is None and num(arrival, "interval_s") is not None:
        interval_ms = float(num(arrival, "interval_s") or 0.0) * 1000.0
    if interval_ms is not None:
        return f"{kind} {interval_ms:g} ms"
    low, high = num(arrival, "low_ms"), num(arrival, "high_ms")
    if low is not None and high is not None:
        return f"{kind} U({low:g}, {high:g}) ms"
    rate = num(arrival, "rate_rps")
    if rate is not None:
        return f"{kind} {rate:g} rps"
    return kind


@dataclass(slots=True)
class StoreContents:
    """Everything a report needs, read once from a store."""

    runs: list[RunRecord]
    cells: list[ProfileCell]
    audits: list[dict[str, Any]]
    repeats: list[dict[str, Any]]
    request_counts: dict[str, dict[str, int]]
    #: run_id → (n, mean J, sample std J) of the attributed energy of successful requests.
    request_energy_j: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    #: run_id → [(t_s, power W)] of load runs that scraped a launched engine's /metrics.
    engine_power_w: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def load_runs(self) -> list[LoadRun]:
        return [LoadRun(r) for r in self.runs if r.kind == "load"]

    @property
    def shape_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if r.kind == "shape-sweep"]

    def run(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.runs if r.run_id == run_id), None)


def read_store(store: ResultStore) -> StoreContents:
    """Read runs, cells, audits, repeats (non-warm-up) and per-run request counts."""
    runs = [RunRecord.from_row(r) for r in store.runs()]
    cells = [
        ProfileCell.from_row(r)
        for r in store.query("SELECT * FROM cells ORDER BY run_id, started_at, cell_key")
    ]
    audits = store.query("SELECT * FROM audits ORDER BY passed, run_id, cell_key, check_name")
    repeats = store.query(
        "SELECT run_id, cell_key, phase, method, idx, n_ops, duration_s, energy_j, net_energy_j"
        " FROM repeats WHERE NOT warmup ORDER BY run_id, cell_key, phase, idx"
    )
    counts: dict[str, dict[str, int]] = {}
    for row in store.query("SELECT run_id, status, count(*) AS n FROM requests GROUP BY 1, 2"):
        counts.setdefault(str(row["run_id"]), {})[str(row["status"])] = int(row["n"])
    energy: dict[str, tuple[int, float, float]] = {}
    for row in store.query(
        "SELECT run_id, count(energy_j) AS n, avg(energy_j) AS mean_j,"
        " coalesce(stddev_samp(energy_j), 0) AS std_j FROM requests"
        " WHERE status = 'ok' AND energy_j IS NOT NULL GROUP BY run_id"
    ):
        energy[str(row["run_id"])] = (int(row["n"]), float(row["mean_j"]), float(row["std_j"]))
    power = {
        r.run_id: power_series(
            store.query(
                "SELECT t_s, sum(energy_j) AS energy_j FROM timelines WHERE run_id = ?"
                " GROUP BY t_s ORDER BY t_s",
                [r.run_id],
            )
        )
        for r in runs
        if r.kind == "load" and dig(r.summary, "engine", "metrics", "samples")
    }
    return StoreContents(runs, cells, audits, repeats, counts, energy, power)


def power_series(
    rows: Sequence[Mapping[str, Any]], max_points: int = 2000
) -> list[tuple[float, float]]:
    """Power (W) between consecutive cumulative-energy samples, at the later instant; at most
    ``max_points`` (consecutive samples merged, so the energy is kept)."""
    pts = [(float(r["t_s"]), float(r["energy_j"])) for r in rows]
    if len(pts) < 2:
        return []
    step = max(1, math.ceil((len(pts) - 1) / max_points))
    pts = pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])
    return [
        (t1, (e1 - e0) / (t1 - t0)) for (t0, e0), (t1, e1) in itertools.pairwise(pts) if t1 > t0
    ]
