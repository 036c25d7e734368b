"""Choose and open meters by name: ``open_meter("auto" | NAME | "a+b", **options)``.

Known meters: ``nvml``, ``rapl``, ``prometheus``, ``codecarbon``, ``estimate``, ``fake``,
``replay``. ``auto`` picks, in this order:

1. GPU: ``nvml`` when NVML sees a GPU; else ``prometheus`` when a ``prometheus_url`` is given.
2. CPU: ``rapl`` when the powercap counters are readable.
3. The GPU and CPU meters found are combined (e.g. ``nvml+rapl``). If none was found, the
   sensorless ``estimate`` meter is used, and a warning says that every number is an estimate
   (``EstimateMeter.selection_note`` keeps why, and it is stored with the results).

``codecarbon``, ``fake`` and ``replay`` are never chosen automatically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from joulebench.errors import (
    ConfigError,
    JoulebenchError,
    MeterUnavailable,
    MissingExtra,
    UnknownName,
)
from joulebench.meters.base import Availability, Meter
from joulebench.validation import validation_message

log = logging.getLogger(__name__)


class MeterOptions(BaseModel):
    """Options shared by the meter backends (each backend uses the ones it needs)."""

    model_config = ConfigDict(extra="forbid")

    cpu_tdp_w: float | None = Field(None, ge=0, description="estimate: CPU package TDP (W)")
    cpu_idle_w: float | None = Field(None, ge=0, description="estimate: idle package power (W)")
    ram_w_per_gb: float | None = Field(None, ge=0, description="estimate: RAM power per GB (W/GB)")
    estimate_scope: str = Field("process", pattern="^(process|system)$")
    estimate_target_ports: list[int] = Field(
        default_factory=list,
        description="estimate, system scope: ports of local servers whose processes are measured",
    )
    prometheus_url: str | None = None
    prometheus_selector: str = ""
    scrape_interval_s: float = Field(15.0, gt=0)
    codecarbon_country: str = "FRA"
    replay_path: Path | None = None
    fake_power_w: float = Field(100.0, ge=0)
    nvml_mode: str = Field("auto", pattern="^(auto|counter|polled)$")
    poll_hz: float = Field(20.0, ge=10)
    rapl_root: Path | None = None
    gpus: str | None = Field(
        None, description="nvml/prometheus: GPUs to measure, NVML indices or UUIDs (0,1 / GPU-…)"
    )
    allow_missing_gpu: bool = Field(
        False, description="a cuda run whose meter has no GPU domain is labelled estimated"
    )


Reach = Literal["task", "task_gpus", "node"]
"""What a meter sees when several tasks share a node: only the calling task's own work
(``task``), the GPUs the task was given (``task_gpus``: its own only if no other task shares
them), or the whole node (``node``: every task's energy)."""


def _node(o: MeterOptions) -> Reach:
    return "node"


def _task(o: MeterOptions) -> Reach:
    return "task"


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """A registered backend: how to probe and open it, which options it reads, what it sees."""

    name: str
    summary: str
    probe: Callable[[MeterOptions], Availability]
    open: Callable[[MeterOptions], Meter]
    automatic: bool
    options: tuple[str, ...] = ()
    """The :class:`MeterOptions` fields this backend reads (a flag for another is an error)."""
    reach: Callable[[MeterOptions], Reach] = _node
    """What the meter sees beside concurrent tasks on one node (see :data:`Reach`)."""


def _nvml_probe(o: MeterOptions) -> Availability:
    from joulebench.meters import nvml

    return nvml.probe()


def _nvml_open(o: MeterOptions) -> Meter:
    from joulebench.meters.nvml import NvmlMeter

    return NvmlMeter(mode=o.nvml_mode, poll_hz=o.poll_hz, gpus=o.gpus)


def _rapl_probe(o: MeterOptions) -> Availability:
    from joulebench.meters import rapl

    return rapl.probe(o.rapl_root or rapl.DEFAULT_ROOT)


def _rapl_open(o: MeterOptions) -> Meter:
    from joulebench.meters import rapl

    return rapl.RaplMeter(o.rapl_root or rapl.DEFAULT_ROOT)


def _prom_probe(o: MeterOptions) -> Availability:
    from joulebench.meters import prometheus

    return prometheus.probe(o.prometheus_url)


def _prom_open(o: MeterOptions) -> Meter:
    from joulebench.meters.prometheus import PrometheusMeter

    if not o.prometheus_url:
        raise MeterUnavailable(
            "the prometheus meter needs a URL: pass --prometheus-url http://host:9090"
        )
    return PrometheusMeter(
        o.prometheus_url,
        selector=o.prometheus_selector,
        scrape_interval_s=o.scrape_interval_s,
        gpus=o.gpus,
    )


def _cc_probe(o: MeterOptions) -> Availability:
    from joulebench.meters import codecarbon

    return codecarbon.probe()


def _cc_open(o: MeterOptions) -> Meter:
    from joulebench.meters.codecarbon import CodeCarbonMeter

    return CodeCarbonMeter(o.codecarbon_country)


def _est_probe(o: MeterOptions) -> Availability:
    from joulebench.meters import estimate

    return estimate.probe()


def _est_open(o: MeterOptions) -> Meter:
    from joulebench.meters.estimate import EstimateMeter

    return EstimateMeter(
        scope=o.estimate_scope,
        cpu_tdp_w=o.cpu_tdp_w,
        cpu_idle_w=o.cpu_idle_w,
        ram_w_per_gb=o.ram_w_per_gb,
        target_ports=o.estimate_target_ports if o.estimate_scope == "system" else (),
    )


def _fake_open(o: MeterOptions) -> Meter:
    from joulebench.meters.fake import FakeMeter

    return FakeMeter(o.fake_power_w)


def _replay_probe(o: MeterOptions) -> Availability:
    if o.replay_path is None:
        return Availability(False, "no replay file given", "pass --replay-path trace.csv")
    if not Path(o.replay_path).is_file():
        return Availability(False, f"{o.replay_path} does not exist", "pass an existing CSV file")
    return Availability(True, str(o.replay_path))


def _replay_open(o: MeterOptions) -> Meter:
    from joulebench.meters.replay import ReplayMeter

    if o.replay_path is None:
        raise MeterUnavailable("the replay meter needs a CSV file: pass --replay-path trace.csv")
    return ReplayMeter(o.replay_path)


def _estimate_reach(o: MeterOptions) -> Reach:
    return "task" if o.estimate_scope == "process" else "node"


KNOWN_METERS: dict[str, MeterSpec] = {
    s.name: s
    for s in (
        MeterSpec(
            "nvml",
            "NVIDIA GPUs via NVML (counter / polled)",
            _nvml_probe,
            _nvml_open,
            True,
            options=("nvml_mode", "poll_hz", "gpus"),
            reach=lambda o: "task_gpus",
        ),
        MeterSpec(
            "rapl",
            "CPU package + DRAM via Linux powercap",
            _rapl_probe,
            _rapl_open,
            True,
            options=("rapl_root",),
        ),
        MeterSpec(
            "prometheus",
            "DCGM exporter via Prometheus",
            _prom_probe,
            _prom_open,
            True,
            options=("prometheus_url", "prometheus_selector", "scrape_interval_s", "gpus"),
        ),
        MeterSpec(
            "codecarbon",
            "CodeCarbon offline tracker",
            _cc_probe,
            _cc_open,
            False,
            options=("codecarbon_country",),
        ),
        MeterSpec(
            "estimate",
            "sensorless CPU/RAM estimate",
            _est_probe,
            _est_open,
            True,
            options=(
                "cpu_tdp_w",
                "cpu_idle_w",
                "ram_w_per_gb",
                "estimate_scope",
                "estimate_target_ports",
            ),
            reach=_estimate_reach,
        ),
        MeterSpec(
            "fake",
            "scripted constant power (tests, demos)",
            lambda o: Availability(True, "test double"),
            _fake_open,
            False,
            options=("fake_power_w",),
            reach=_task,
        ),
        MeterSpec(
            "replay",
            "replay a recorded CSV trace",
            _replay_probe,
            _replay_open,
            False,
            options=("replay_path",),
            reach=_task,
        ),
    )
}
"""Every backend; ``allow_missing_gpu`` is no backend's option (every spec takes it)."""


def meter_options(**options: Any) -> MeterOptions:
    """Validate keyword options into :class:`MeterOptions` with a message that says what to fix."""
    try:
        return MeterOptions(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, "invalid meter options", top="options")) from None


def probe_all(**options: Any) -> dict[str, Availability]:
    """Availability of every known backend, with the reason and a hint when unavailable."""
    opts = meter_options(**options)
    out = {}
    for name, spec in KNOWN_METERS.items():
        try:
            out[name] = spec.probe(opts)
        except JoulebenchError as exc:
            out[name] = Availability(False, str(exc))
        except Exception as exc:  # a probe must never break `joulebench env`
            log.debug("probe %s crashed", name, exc_info=True)
            out[name] = Availability(False, f"probe failed: {exc.__class__.__name__}: {exc}")
    return out


def _open_one(name: str, opts: MeterOptions) -> Meter:
    spec = KNOWN_METERS.get(name)
    if spec is None:
        raise UnknownName("meter", name, [*KNOWN_METERS, "auto"])
    try:
        return spec.open(opts)
    except MissingExtra as exc:
        raise MeterUnavailable(f"meter {name!r} is unavailable: {exc}") from exc
    except JoulebenchError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise MeterUnavailable(f"meter {name!r} cannot start: {exc}") from exc


def _auto(opts: MeterOptions) -> Meter:
    from joulebench.meters.combined import CombinedMeter
    from joulebench.meters.estimate import EstimateMeter

    parts: list[Meter] = []
    why_not: list[str] = []
    gpu_names = ["nvml", "prometheus"] if opts.prometheus_url else ["nvml"]
    for name in gpu_names:
        availability = KNOWN_METERS[name].probe(opts)
        if availability.available:
            try:
                parts.append(_open_one(name, opts))
                break
            except JoulebenchError as exc:
                why_not.append(f"{name}: {exc}")
        else:
            why_not.append(f"{name}: {availability.reason}")
    rapl = KNOWN_METERS["rapl"].probe(opts)
    if rapl.available:
        try:
            parts.append(_open_one("rapl", opts))
        except JoulebenchError as exc:
            why_not.append(f"rapl: {exc}")
    else:
        why_not.append(f"rapl: {rapl.reason}")
    if len(parts) == 1:
        log.info("auto meter: %s (no other sensor: %s)", parts[0].name, "; ".join(why_not))
        return parts[0]
    if parts:
        return CombinedMeter(parts)
    meter = _open_one("estimate", opts)
    note = "auto fell back to the sensorless estimator: " + "; ".join(why_not)
    if isinstance(meter, EstimateMeter):
        meter.selection_note = note
    log.warning(
        "no energy sensor found (%s): using the sensorless estimator — every number is an ESTIMATE",
        "; ".join(why_not),
    )
    return meter


def parse_meter_spec(spec: str) -> list[str]:
    """``auto`` or the meter names of ``spec`` (``nvml+rapl`` → ``["nvml", "rapl"]``), checked.

    Unknown names raise :class:`UnknownName` listing the known ones.
    """
    names = [n.strip().lower() for n in spec.split("+")]
    if any(not n for n in names):
        raise ConfigError(f"invalid meter spec {spec!r}: use a name or names joined by '+'")
    if names == ["auto"]:
        return names
    if "auto" in names:
        raise ConfigError("'auto' cannot be combined with other meters; name them instead")
    for n in names:
        if n not in KNOWN_METERS:
            raise UnknownName("meter", n, [*KNOWN_METERS, "auto"])
    if len(set(names)) != len(names):
        raise ConfigError(f"meter spec {spec!r} names a meter twice")
    return names


def open_meter(spec: str = "auto", **options: Any) -> Meter:
    """Open ``auto``, one meter by name, or several joined with ``+`` (``nvml+rapl``).

    Unknown names raise :class:`UnknownName` listing the known ones; a backend that cannot
    measure here raises :class:`MeterUnavailable` saying why and how to enable it.
    ``allow_missing_gpu`` is kept for :func:`joulebench.meters.gpus.require_gpu_domain`.
    """
    from joulebench.meters.combined import CombinedMeter
    from joulebench.meters.gpus import set_allow_missing_gpu

    opts = meter_options(**options)
    names = parse_meter_spec(spec)
    if names == ["auto"]:
        meter = _auto(opts)
    else:
        opened: list[Meter] = []
        try:
            for n in names:
                opened.append(_open_one(n, opts))
            meter = opened[0] if len(opened) == 1 else CombinedMeter(opened)
        except BaseException:
            for m in opened:
                m.close()
            raise
    set_allow_missing_gpu(meter, opts.allow_missing_gpu)
    return meter


def _names_in_use(spec: str) -> list[str]:
    names = parse_meter_spec(spec)
    return [n for n, s in KNOWN_METERS.items() if s.automatic] if names == ["auto"] else names


def check_backend_options(
    spec: str, given: Iterable[str], flag: Callable[[str], str] = str
) -> None:
    """Refuse options given for a backend that ``spec`` does not use.

    ``given`` are :class:`MeterOptions` field names the user set; ``flag`` names one in the
    message (``replay_path`` → ``--replay-path``). ``auto`` uses every automatic backend.
    """
    in_use = set(_names_in_use(spec))
    for option in given:
        owners = [n for n, s in KNOWN_METERS.items() if option in s.options]
        if owners and not in_use & set(owners):
            raise ConfigError(
                f"{flag(option)} is an option of the {' / '.join(owners)} meter, "
                f"which --meter {spec} does not use: drop it or choose that meter"
            )


def shared_meters(spec: str, options: dict[str, Any], *, whole_gpus: bool) -> list[str]:
    """The meters of ``spec`` that would count other tasks' energy on a shared node.

    A meter is safe when its registry entry says it sees only its task (``task``), or only the
    task's GPUs (``task_gpus``) and the task owns whole GPUs. ``auto`` is never safe: it may
    pick a node-wide meter.
    """
    opts = meter_options(**options)
    names = parse_meter_spec(spec)
    if names == ["auto"]:
        return names
    safe = {"task", "task_gpus"} if whole_gpus else {"task"}
    return sorted(n for n in names if KNOWN_METERS[n].reach(opts) not in safe)
