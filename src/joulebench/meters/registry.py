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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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
    """The meter options a command was given, flat, as its flags name them (``fake_power_w``).

    Only a bag: each backend's own model (:data:`BackendConfig`, ``kind``-discriminated) holds
    its fields' defaults and constraints, and :meth:`MeterSpec.configure` reads the options it
    maps (:attr:`MeterSpec.fields`) into it. ``None`` means "not given".
    """

    model_config = ConfigDict(extra="forbid")

    cpu_tdp_w: float | None = None
    cpu_idle_w: float | None = None
    ram_w_per_gb: float | None = None
    estimate_scope: str | None = None
    estimate_target_ports: list[int] | None = None
    prometheus_url: str | None = None
    prometheus_selector: str | None = None
    scrape_interval_s: float | None = None
    codecarbon_country: str | None = None
    replay_path: Path | None = None
    fake_power_w: float | None = None
    nvml_mode: str | None = None
    poll_hz: float | None = None
    rapl_root: Path | None = None
    gpus: str | None = None
    allow_missing_gpu: bool = Field(
        False, description="a cuda run whose meter has no GPU domain is labelled estimated"
    )


Reach = Literal["task", "task_gpus", "node"]
"""What a meter sees when several tasks share a node: only the calling task's own work
(``task``), the GPUs the task was given (``task_gpus``: its own only if no other task shares
them), or the whole node (``node``: every task's energy)."""


class _Backend(BaseModel):
    """One backend's own configuration; ``kind`` names the backend (the discriminator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NvmlConfig(_Backend):
    kind: Literal["nvml"] = "nvml"
    mode: Literal["auto", "counter", "polled"] = "auto"
    poll_hz: float = Field(20.0, ge=10)
    gpus: str | None = Field(None, description="NVML indices or UUIDs (0,1 / GPU-…)")


class RaplConfig(_Backend):
    kind: Literal["rapl"] = "rapl"
    root: Path | None = Field(None, description="powercap root (default /sys/class/powercap)")


class PrometheusConfig(_Backend):
    kind: Literal["prometheus"] = "prometheus"
    url: str | None = None
    selector: str = ""
    scrape_interval_s: float = Field(15.0, gt=0)
    gpus: str | None = None


class CodeCarbonConfig(_Backend):
    kind: Literal["codecarbon"] = "codecarbon"
    country: str = "FRA"


class EstimateConfig(_Backend):
    kind: Literal["estimate"] = "estimate"
    cpu_tdp_w: float | None = Field(None, ge=0)
    cpu_idle_w: float | None = Field(None, ge=0)
    ram_w_per_gb: float | None = Field(None, ge=0)
    scope: Literal["process", "system"] = "process"
    target_ports: tuple[int, ...] = ()


class FakeConfig(_Backend):
    kind: Literal["fake"] = "fake"
    power_w: float = Field(100.0, ge=0)


class ReplayConfig(_Backend):
    kind: Literal["replay"] = "replay"
    path: Path | None = None


BackendConfig = Annotated[
    NvmlConfig
    | RaplConfig
    | PrometheusConfig
    | CodeCarbonConfig
    | EstimateConfig
    | FakeConfig
    | ReplayConfig,
    Field(discriminator="kind"),
]
"""One backend's configuration, chosen by ``kind`` (``{"kind": "estimate", "scope": "system"}``)."""

_BACKEND_CONFIG: TypeAdapter[BackendConfig] = TypeAdapter(BackendConfig)


def backend_config(data: Mapping[str, Any]) -> BackendConfig:
    """Validate one backend's configuration (its ``kind`` picks the model), messages that say
    what to fix."""
    if data.get("kind") not in KNOWN_METERS:
        raise UnknownName("meter", str(data.get("kind")), list(KNOWN_METERS))
    try:
        return _BACKEND_CONFIG.validate_python(dict(data))
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, f"invalid {data['kind']} meter config")) from None


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """A registered backend: its configuration model, how to probe and open it with that
    configuration, and what it sees."""

    name: str
    summary: str
    config: type[_Backend]
    probe: Callable[[Any], Availability]
    open: Callable[[Any], Meter]
    automatic: bool
    fields: Mapping[str, str] = field(default_factory=dict)
    """Flat option name (:class:`MeterOptions`, the CLI's flags) → this backend's config field."""
    reach: Callable[[Any], Reach] = lambda c: "node"
    """What the meter sees beside concurrent tasks on one node (see :data:`Reach`)."""

    @property
    def options(self) -> tuple[str, ...]:
        """The :class:`MeterOptions` fields this backend reads (a flag for another is an error)."""
        return tuple(self.fields)

    def configure(self, opts: MeterOptions) -> _Backend:
        """This backend's configuration from the flat options (only the fields it reads);
        a value it refuses is a :class:`ConfigError` naming the option as it was given."""
        given = {dst: getattr(opts, src) for src, dst in self.fields.items()}
        try:
            return self.config(**{k: v for k, v in given.items() if v is not None})
        except ValidationError as exc:
            flat = {dst: src for src, dst in self.fields.items()}
            raise ConfigError(
                validation_message(exc, f"invalid meter options ({self.name})", name=flat)
            ) from None


def _nvml_probe(c: NvmlConfig) -> Availability:
    from joulebench.meters import nvml

    return nvml.probe()


def _nvml_open(c: NvmlConfig) -> Meter:
    from joulebench.meters.nvml import NvmlMeter

    return NvmlMeter(mode=c.mode, poll_hz=c.poll_hz, gpus=c.gpus)


def _rapl_probe(c: RaplConfig) -> Availability:
    from joulebench.meters import rapl

    return rapl.probe(c.root or rapl.DEFAULT_ROOT)


def _rapl_open(c: RaplConfig) -> Meter:
    from joulebench.meters import rapl

    return rapl.RaplMeter(c.root or rapl.DEFAULT_ROOT)


def _prom_probe(c: PrometheusConfig) -> Availability:
    from joulebench.meters import prometheus

    return prometheus.probe(c.url)


def _prom_open(c: PrometheusConfig) -> Meter:
    from joulebench.meters.prometheus import PrometheusMeter

    if not c.url:
        raise MeterUnavailable(
            "the prometheus meter needs a URL: pass --prometheus-url http://host:9090"
        )
    return PrometheusMeter(
        c.url, selector=c.selector, scrape_interval_s=c.scrape_interval_s, gpus=c.gpus
    )


def _cc_probe(c: CodeCarbonConfig) -> Availability:
    from joulebench.meters import codecarbon

    return codecarbon.probe()


def _cc_open(c: CodeCarbonConfig) -> Meter:
    from joulebench.meters.codecarbon import CodeCarbonMeter

    return CodeCarbonMeter(c.country)


def _est_probe(c: EstimateConfig) -> Availability:
    from joulebench.meters import estimate

    return estimate.probe()


def _est_open(c: EstimateConfig) -> Meter:
    from joulebench.meters.estimate import EstimateMeter

    return EstimateMeter(
        scope=c.scope,
        cpu_tdp_w=c.cpu_tdp_w,
        cpu_idle_w=c.cpu_idle_w,
        ram_w_per_gb=c.ram_w_per_gb,
        target_ports=c.target_ports if c.scope == "system" else (),
    )


def _fake_open(c: FakeConfig) -> Meter:
    from joulebench.meters.fake import FakeMeter

    return FakeMeter(c.power_w)


def _replay_probe(c: ReplayConfig) -> Availability:
    if c.path is None:
        return Availability(False, "no replay file given", "pass --replay-path trace.csv")
    if not Path(c.path).is_file():
        return Availability(False, f"{c.path} does not exist", "pass an existing CSV file")
    return Availability(True, str(c.path))


def _replay_open(c: ReplayConfig) -> Meter:
    from joulebench.meters.replay import ReplayMeter

    if c.path is None:
        raise MeterUnavailable("the replay meter needs a CSV file: pass --replay-path trace.csv")
    return ReplayMeter(c.path)


def _estimate_reach(c: EstimateConfig) -> Reach:
    return "task" if c.scope == "process" else "node"


KNOWN_METERS: dict[str, MeterSpec] = {
    s.name: s
    for s in (
        MeterSpec(
            "nvml",
            "NVIDIA GPUs via NVML (counter / polled)",
            NvmlConfig,
            _nvml_probe,
            _nvml_open,
            True,
            fields={"nvml_mode": "mode", "poll_hz": "poll_hz", "gpus": "gpus"},
            reach=lambda c: "task_gpus",
        ),
        MeterSpec(
            "rapl",
            "CPU package + DRAM via Linux powercap",
            RaplConfig,
            _rapl_probe,
            _rapl_open,
            True,
            fields={"rapl_root": "root"},
        ),
        MeterSpec(
            "prometheus",
            "DCGM exporter via Prometheus",
            PrometheusConfig,
            _prom_probe,
            _prom_open,
            True,
            fields={
                "prometheus_url": "url",
                "prometheus_selector": "selector",
                "scrape_interval_s": "scrape_interval_s",
                "gpus": "gpus",
            },
        ),
        MeterSpec(
            "codecarbon",
            "CodeCarbon offline tracker",
            CodeCarbonConfig,
            _cc_probe,
            _cc_open,
            False,
            fields={"codecarbon_country": "country"},
        ),
        MeterSpec(
            "estimate",
            "sensorless CPU/RAM estimate",
            EstimateConfig,
            _est_probe,
            _est_open,
            True,
            fields={
                "cpu_tdp_w": "cpu_tdp_w",
                "cpu_idle_w": "cpu_idle_w",
                "ram_w_per_gb": "ram_w_per_gb",
                "estimate_scope": "scope",
                "estimate_target_ports": "target_ports",
            },
            reach=_estimate_reach,
        ),
        MeterSpec(
            "fake",
            "scripted constant power (tests, demos)",
            FakeConfig,
            lambda c: Availability(True, "test double"),
            _fake_open,
            False,
            fields={"fake_power_w": "power_w"},
            reach=lambda c: "task",
        ),
        MeterSpec(
            "replay",
            "replay a recorded CSV trace",
            ReplayConfig,
            _replay_probe,
            _replay_open,
            False,
            fields={"replay_path": "path"},
            reach=lambda c: "task",
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


def meter_configs(spec: str, **options: Any) -> list[BackendConfig]:
    """The configuration of every backend ``spec`` opens (``auto``: every automatic one),
    validated: a bad value for a backend in use is a :class:`ConfigError` before anything
    opens."""
    opts = meter_options(**options)
    return [KNOWN_METERS[n].configure(opts) for n in _names_in_use(spec)]  # type: ignore[misc]


def probe_all(**options: Any) -> dict[str, Availability]:
    """Availability of every known backend, with the reason and a hint when unavailable."""
    opts = meter_options(**options)
    out = {}
    for name, spec in KNOWN_METERS.items():
        try:
            out[name] = spec.probe(spec.configure(opts))
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
        return spec.open(spec.configure(opts))
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
        gpu = KNOWN_METERS[name]
        availability = gpu.probe(gpu.configure(opts))
        if availability.available:
            try:
                parts.append(_open_one(name, opts))
                break
            except JoulebenchError as exc:
                why_not.append(f"{name}: {exc}")
        else:
            why_not.append(f"{name}: {availability.reason}")
    rapl_spec = KNOWN_METERS["rapl"]
    rapl = rapl_spec.probe(rapl_spec.configure(opts))
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
    specs = {n: KNOWN_METERS[n] for n in names}
    return sorted(n for n, sp in specs.items() if sp.reach(sp.configure(opts)) not in safe)
