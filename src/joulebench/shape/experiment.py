"""The measured experiment: the same seeded arrival trace sent directly and through the gateway.

:func:`compare` starts the gateway in-process in front of the *same* server, measures with the
*same* meter and the *same* idle baseline, warms the server up first (unmeasured), then runs the
load directly and through the gateway, and returns a side-by-side :class:`Comparison`: energy per
request under every accounting of the load generator (gross and net), TTFT/E2E p50 and p99, the
delay the gateway added, and the server's batch sizes read from its ``/metrics`` before and
after each run. Shaping's value is measured, never assumed: the shaped run's latencies include
the gateway's hold, and its energy includes the gateway's own work when the meter sees it.
What a trial is set up with (server, trace, how loads send, meter, gateways) is one
:class:`Trial`, which :func:`compare` and the sweep build from their keywords.

Against an engine joulebench launched (``engine``: its
:class:`~joulebench.load.engines.session.EngineSession`), each measured run is watched (the
engine's ``/metrics`` at 1 Hz, its energy endpoint) and its load JSON gets the ``engine``
section and the server-energy audit, as ``joulebench load`` does; the caller stamps the engine's
exit status into them, and into :attr:`Comparison.engine`, once it has stopped
(:func:`stamp_engine`).

Policy sweeps (several T and N) and their energy-vs-latency Pareto front live in
:mod:`joulebench.shape.sweep`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from joulebench.errors import ConfigError, at_least
from joulebench.meters.base import Meter
from joulebench.meters.window import measure_idle
from joulebench.results.shaping import (
    ComparisonResult,
    RunHeadline,
    ServerBatching,
    ShapedRun,
    TailLatency,
)
from joulebench.shape.policies import Policy, parse_policy
from joulebench.shape.runner import RunningGateway, run_gateway
from joulebench.shape.shaper import DEFAULT_MAX_QUEUE
from joulebench.shape.upstream import metric_total as _total
from joulebench.shape.upstream import parse_prometheus

if TYPE_CHECKING:
    from joulebench.load.engines.session import EngineSession

log = logging.getLogger(__name__)

#: Accountings of the load generator's ``energy.per_request_j`` block, in display order.
ACCOUNTINGS = ("paper_whole_window", "idle_subtracted", "steady_state", "attributed_mean")
GROSS_NET = {
    "paper_whole_window": "gross",
    "idle_subtracted": "net",
    "steady_state": "gross",
    "attributed_mean": "gross",
    "attributed_net_mean": "net",
}

LoadFn = Callable[..., Any]  # joulebench.load.runner.run_load's signature


# -- server metrics ---------------------------------------------------------------------------
def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float] | None:
    """The server's ``/metrics`` samples, or ``None`` if it has none (not every server does)."""
    try:
        resp = httpx.get(url.rstrip("/") + "/metrics", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        log.info("no /metrics at %s: %s", url, exc)
        return None
    if resp.status_code != 200:
        return None
    return parse_prometheus(resp.text)


def server_batching(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> ServerBatching:
    """Mean batch size over a run from counter deltas, stating which counters it used.

    A ``*_batch_size`` histogram (``_sum``/``_count``) is preferred; otherwise joulebench's
    server counters give decode tokens per forward step (the mean number of sequences decoding
    together). Servers without either get ``None`` and a note.
    """
    if before is None or after is None:
        return {"mean_batch_size": None, "note": "server exposes no /metrics"}
    for prefix in ("joulebench_batch_size", "vllm:batch_size"):
        s0, s1 = _total(before, prefix + "_sum"), _total(after, prefix + "_sum")
        c0, c1 = _total(before, prefix + "_count"), _total(after, prefix + "_count")
        if None not in (s0, s1, c0, c1) and c1 > c0:  # type: ignore[operator]
            return {
                "mean_batch_size": (s1 - s0) / (c1 - c0),  # type: ignore[operator]
                "note": f"{prefix} histogram",
            }
    d0 = _total(before, "joulebench_tokens_total", 'phase="decode"')
    d1 = _total(after, "joulebench_tokens_total", 'phase="decode"')
    st0, st1 = _total(before, "joulebench_steps_total"), _total(after, "joulebench_steps_total")
    if None in (d0, d1, st0, st1) or st1 <= st0:  # type: ignore[operator]
        return {"mean_batch_size": None, "note": "no batch-size counters in the server's /metrics"}
    out: ServerBatching = {
        "mean_batch_size": (d1 - d0) / (st1 - st0),  # type: ignore[operator]
        "steps": st1 - st0,  # type: ignore[operator]
        "note": "decode tokens per forward step (joulebench_tokens_total / joulebench_steps_total)",
    }
    bmax = _total(after, "joulebench_batch_size_max")
    if bmax is not None:
        out["batch_size_max_since_start"] = bmax
    return out


# -- results ----------------------------------------------------------------------------------
@dataclass(slots=True)
class RunSummary:
    """One measured run (direct or through one policy), reduced to what the tables need."""

    label: str
    load: dict[str, Any]  # LoadResult.to_json()
    attributed_net_mean_j: float | None
    server: ServerBatching
    gateway: dict[str, Any] | None = None
    #: Per-request rows (``LoadResult.request_rows()``) and the power timeline samples, kept so
    #: a store holds shaped runs as fully as direct ones; not part of ``to_dict`` (the JSON).
    requests: list[dict[str, Any]] = field(default_factory=list, repr=False)
    timeline: list[tuple[float, dict[str, float]]] = field(default_factory=list, repr=False)

    def per_request_j(self) -> dict[str, float | None]:
        energy = self.load.get("energy") or {}
        per = dict(energy.get("per_request_j") or dict.fromkeys(ACCOUNTINGS))
        per["attributed_net_mean"] = self.attributed_net_mean_j
        return per

    def latency_ms(self, metric: str, q: str) -> float | None:
        block = self.load.get(metric) or {}
        v = block.get(q)
        return None if v is None else float(v)

    def tail_ms(self, metric: str) -> TailLatency:
        return {"p50": self.latency_ms(metric, "p50"), "p99": self.latency_ms(metric, "p99")}

    @property
    def added_delay_ms(self) -> dict[str, float | None]:
        if self.gateway is None:
            return {"p50": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
        return dict(self.gateway["added_delay_ms"])

    def headline(self) -> RunHeadline:
        req = self.load.get("requests") or {}
        return {
            "label": self.label,
            "ok": req.get("ok"),
            "failed": req.get("failed"),
            "energy_per_request_j": self.per_request_j(),
            "ttft_ms": self.tail_ms("ttft_ms"),
            "e2e_ms": self.tail_ms("e2e_ms"),
            "added_delay_ms": self.added_delay_ms,
            "mean_batch_size": self.server.get("mean_batch_size"),
            "mean_group_size": None if self.gateway is None else self.gateway["mean_group_size"],
        }

    def to_dict(self) -> ShapedRun:
        return {
            **self.headline(),
            "server": self.server,
            "gateway": self.gateway,
            "load": {k: v for k, v in self.load.items() if k != "gateway"},  # said just above
        }


def _rel(a: float | None, b: float | None) -> float | None:
    """Relative change from ``a`` to ``b``; ``None`` unless both are positive (a change between
    net energies at or below the idle baseline is not a saving of anything)."""
    if a is None or b is None or a <= 0 or b < 0:
        return None
    return (b - a) / a


@dataclass(slots=True)
class Comparison:
    """Direct vs shaped, same trace, server and meter."""

    direct: RunSummary
    shaped: RunSummary
    policy: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    engine: dict[str, Any] | None = None  # the launched engine's process section, if any

    @property
    def runs(self) -> list[RunSummary]:
        return [self.direct, self.shaped]

    def rows(self) -> list[tuple[str, float | None, float | None, float | None]]:
        """(metric, direct, shaped, relative change) rows, energy in J/request."""
        rows: list[tuple[str, float | None, float | None, float | None]] = []
        d_e, s_e = self.direct.per_request_j(), self.shaped.per_request_j()
        for key, kind in GROSS_NET.items():
            rows.append((f"energy/request J · {key} ({kind})", d_e.get(key), s_e.get(key), None))
        for metric in ("ttft_ms", "e2e_ms"):
            for q in ("p50", "p99"):
                a, b = self.direct.latency_ms(metric, q), self.shaped.latency_ms(metric, q)
                rows.append((f"{metric} {q}", a, b, None))
        for q in ("p50", "p99"):
            rows.append((f"added delay ms {q}", 0.0, self.shaped.added_delay_ms.get(q), None))
        rows.append(
            (
                "server mean batch size",
                self.direct.server.get("mean_batch_size"),
                self.shaped.server.get("mean_batch_size"),
                None,
            )
        )
        return [(name, a, b, _rel(a, b)) for name, a, b, _ in rows]

    def to_json(self) -> ComparisonResult:
        j: ComparisonResult = {
            "policy": self.policy,
            "config": self.config,
            "energy_method": self.method,
            "estimated": bool(self.method and "estimated" in self.method),
            "table": [
                {"metric": m, "direct": a, "shaped": b, "change": c} for m, a, b, c in self.rows()
            ],
            "direct": self.direct.to_dict(),
            "shaped": self.shaped.to_dict(),
        }
        if self.engine is not None:
            j["engine"] = self.engine
        return j


class _EngineRuns(Protocol):
    """A comparison or a sweep: runs against one engine."""

    engine: dict[str, Any] | None

    @property
    def runs(self) -> Sequence[RunSummary]: ...


def stamp_engine(result: _EngineRuns, session: EngineSession | None) -> None:
    """After the launched engine stopped: its final process section (exit status, how it was
    stopped) on ``result.engine`` and on each run's load JSON (what a store keeps)."""
    if session is None:
        return
    for run in result.runs:
        session.stamp(run.load)
    result.engine = session.describe()


# -- running ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _target(url: str | None, embedded: dict[str, Any] | None, meter: Meter | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    try:
        from joulebench.serve.launch import embedded_server
    except ImportError as exc:
        raise ConfigError(
            "no --url given and the embedded server is not available here "
            f"({exc}); pass --url of a running server"
        ) from None
    with embedded_server(meter=meter, **(embedded or {})) as base:
        yield base


def _attributed_net_mean(result: Any) -> float | None:
    vals = [r.energy_net_j for r in getattr(result, "ok", []) if r.energy_net_j is not None]
    return sum(vals) / len(vals) if vals else None


def measure_run(
    label: str,
    send_url: str,
    server_url: str,
    *,
    load_fn: LoadFn,
    load_kwargs: dict[str, Any],
    gateway: Any = None,
    engine: EngineSession | None = None,
) -> RunSummary:
    """Run one load against ``send_url``, scraping ``server_url``'s metrics around it (and
    watching the launched ``engine``: its section goes into the load's JSON)."""
    from joulebench.load.engines.session import measured

    before = scrape(server_url)
    result, load = measured(engine, lambda: load_fn(send_url, **load_kwargs))
    after = scrape(server_url)
    rows = result.request_rows() if hasattr(result, "request_rows") else []
    snapshot = None
    if gateway is not None:
        snapshot = gateway.metrics.snapshot()
        decisions = gateway.policy.explain()  # adaptive policies: every release, explained
        if decisions is not None:
            snapshot["decisions"] = decisions
        load["gateway"] = snapshot  # stored runs carry it in their summary
    return RunSummary(
        label=label,
        load=load,
        attributed_net_mean_j=_attributed_net_mean(result),
        server=server_batching(before, after),
        gateway=snapshot,
        requests=list(rows),
        timeline=list(getattr(result, "timeline", None) or []),
    )


@dataclass(frozen=True, slots=True)
class Trial:
    """A shaped-vs-direct trial's setup: what :func:`compare` and
    :func:`~joulebench.shape.sweep.sweep` take by name and :func:`measure_direct_and_shaped` runs.

    The server: ``url``, or (``None``) the embedded one started with ``embedded``'s options
    (model, precision, scheduler); ``engine``, the launched engine at ``url``, watched during
    each measured run. The seeded trace: ``arrival``, ``n``, ``prompts``, ``seed``. How each
    load sends it: ``protocol``, ``output_length``, ``concurrency``, ``timeout_s`` and
    ``load_options``, further keyword arguments of ``load_fn``
    (:func:`~joulebench.load.runner.run_load`: ``model``, ``tokenizer``, ``timeline_hz``). The
    meter and its idle baseline: without ``idle_power_w`` and with a meter, it is measured once,
    with the server loaded and quiet, for ``idle_s`` seconds, after ``warmup_n`` unmeasured
    requests. The gateways: ``max_delay_ms`` for policies given by name; each holds up to
    :attr:`gateway_queue` requests before 429.

    ``warm_n``: before each measured run, this many unmeasured requests of the same arrival
    process (another seed, :data:`WARM_SEED`) go the same way — straight to the server before
    the direct run, through a gateway with the run's policy before a shaped one. A learning
    policy (``slo``) then starts its measured run from what it learnt, as a long-running
    gateway would, instead of from nothing; a fixed policy has nothing to learn, and every run
    gets the same traffic before it. The measured run still has a gateway of its own, and the
    policy forgets the releases it explained (:meth:`Policy.forget_releases`), not its
    estimates.
    """

    url: str | None
    arrival: str
    prompts: Sequence[Any]
    n: int
    protocol: str = "openai-chat"
    output_length: int | Sequence[int] = 32
    concurrency: int | None = None
    timeout_s: float = 120.0
    seed: int = 0
    load_fn: LoadFn | None = None
    load_options: dict[str, Any] | None = None
    meter: Meter | None = None
    idle_power_w: float | None = None
    idle_s: float = 2.0
    warmup_n: int = 4
    warm_n: int = 0
    max_delay_ms: float | None = None
    embedded: dict[str, Any] | None = None
    engine: EngineSession | None = None

    def __post_init__(self) -> None:
        at_least(self.warmup_n, 0, "warm-up requests")
        at_least(self.warm_n, 0, "warming requests")

    @property
    def gateway_queue(self) -> int:
        """How many requests a gateway of this trial holds before 429: the gateway's default, or
        ``n`` when larger, so that no gateway refuses a request of the trial's own trace."""
        return max(DEFAULT_MAX_QUEUE, self.n)

    def policy(self, policy: str | Policy) -> Policy:
        """``policy``, parsed with this trial's ``max_delay_ms`` when given by name."""
        if isinstance(policy, str):
            return parse_policy(policy, max_delay_ms=self.max_delay_ms)
        return policy


def measured_load_kwargs(trial: Trial, load_fn: LoadFn, server_url: str) -> dict[str, Any]:
    """Prepare ``server_url`` for ``trial``'s measured runs and return their ``load_fn`` keyword
    arguments.

    Sends ``warmup_n`` unmeasured ``burst`` requests, then (with a meter, no ``idle_power_w`` and
    ``idle_s`` > 0) measures the loaded, quiet server's idle power once, so every measured run
    subtracts the same baseline. The kwargs are how every load sends (protocol, prompts, output
    length, concurrency, timeout, seed) + ``load_options``, arrival, n + ``meter`` and
    ``idle_power_w``.
    """
    base_kwargs = {
        "protocol": trial.protocol,
        "prompts": trial.prompts,
        "output_length": trial.output_length,
        "concurrency": trial.concurrency,
        "timeout_s": trial.timeout_s,
        "seed": trial.seed,
    }
    if trial.warmup_n:
        load_fn(server_url, arrival="burst", n=trial.warmup_n, **base_kwargs)  # unmeasured
    idle_power_w, meter = trial.idle_power_w, trial.meter
    if meter is not None and idle_power_w is None and trial.idle_s > 0:
        idle_power_w = measure_idle(meter, trial.idle_s).total_power_w
    measured = {**(trial.load_options or {}), "arrival": trial.arrival, "n": trial.n}
    return {**base_kwargs, **measured, "meter": meter, "idle_power_w": idle_power_w}


#: Added to the trial's seed for the warming traffic, so it is not the measured trace.
WARM_SEED = 10_000


def _warm(trial: Trial, load_fn: LoadFn, url: str, kwargs: dict[str, Any]) -> None:
    """``trial.warm_n`` unmeasured requests of the trial's arrival process to ``url``; a
    warning when some failed (what a learning policy then learnt includes them)."""
    warm = {**kwargs, "n": trial.warm_n, "seed": trial.seed + WARM_SEED}
    result = load_fn(url, **{**warm, "meter": None, "idle_power_w": None})
    records = getattr(result, "records", None)
    if records is not None:
        failed = sum(1 for r in records if not r.ok)
        if failed:
            log.warning(
                "warming traffic to %s: %d of %d requests failed", url, failed, len(records)
            )


def measure_direct_and_shaped(
    trial: Trial, policies: Sequence[Policy]
) -> tuple[list[RunSummary], float | None]:
    """The direct run, then one run through a fresh gateway per policy: the same server
    (``url``, or the embedded one), after one warm-up and one idle baseline
    (:func:`measured_load_kwargs`); with ``trial.warm_n``, each run after its own warming
    traffic (see :class:`Trial`). Returns the runs in that order and the idle power they
    subtracted; what :func:`compare` and :func:`~joulebench.shape.sweep.sweep` both measure."""
    load_fn = trial.load_fn
    if load_fn is None:
        from joulebench.load.runner import run_load

        load_fn = run_load
    engine = trial.engine

    def gateway(server_url: str, pol: Policy) -> AbstractContextManager[RunningGateway]:
        return run_gateway(
            server_url, pol, max_queue=trial.gateway_queue, upstream_timeout_s=trial.timeout_s
        )

    with _target(trial.url, trial.embedded, trial.meter) as server_url:
        kwargs = measured_load_kwargs(trial, load_fn, server_url)
        if trial.warm_n:
            _warm(trial, load_fn, server_url, kwargs)
        runs = [
            measure_run(
                "direct", server_url, server_url, load_fn=load_fn, load_kwargs=kwargs, engine=engine
            )
        ]
        for pol in policies:
            if trial.warm_n:
                with gateway(server_url, pol) as gw:
                    _warm(trial, load_fn, gw.url, kwargs)
                pol.forget_releases()
            with gateway(server_url, pol) as gw:
                runs.append(
                    measure_run(
                        pol.describe(),
                        gw.url,
                        server_url,
                        load_fn=load_fn,
                        load_kwargs=kwargs,
                        gateway=gw.gateway,
                        engine=engine,
                    )
                )
    return runs, kwargs["idle_power_w"]


def compare(trial: Trial, policy: str | Policy) -> Comparison:
    """``trial``'s seeded trace, directly then through the gateway (``policy``), on the same
    server with the same meter; the idle baseline, measured once, is used for both runs."""
    pol = trial.policy(policy)
    (direct, shaped), idle_power_w = measure_direct_and_shaped(trial, [pol])
    config = {
        "url": trial.url or "embedded",
        "embedded": trial.embedded if trial.url is None else None,
        "arrival": trial.arrival,
        "n": trial.n,
        "protocol": trial.protocol,
        "seed": trial.seed,
        "idle_power_w": idle_power_w,
        "warmup_n": trial.warmup_n,
        "warm_n": trial.warm_n,
        "order": "warm-up, direct, shaped"
        if not trial.warm_n
        else "warm-up, warm + direct, warm + shaped",
    }
    method = (direct.load.get("energy") or {}).get("method")
    return Comparison(direct, shaped, pol.to_dict(), config, method)
