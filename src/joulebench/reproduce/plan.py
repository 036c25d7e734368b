"""The study plans of ``joulebench reproduce``: data (YAML), validated at load.

A plan names what each of the study's three studies runs on this machine:

- ``precision`` and ``batch``: sweep grids (the keys of a ``joulebench sweep`` file, minus
  ``name`` and ``study``, which the plan sets), run through :func:`joulebench.profile.sweep.run_sweep`
  so they resume like any sweep;
- ``serving``: one model behind the embedded server, each scheduler × each arrival pattern, one
  stored load run per pair;
- ``shaping`` (optional): the same trace directly and through the shaping gateway.

The bundled plans live in ``joulebench/data/reproduce/`` (``quick.yaml``: tiny models on a CPU;
``full.yaml``: the study's shape-only models on a GPU). Unknown keys are errors, and every error
names the file and the key to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from joulebench.errors import ConfigError, JoulebenchError, UnknownName
from joulebench.profile.sweep import SweepConfig
from joulebench.validation import validation_message
from joulebench.workloads.sources import parse_model_source
from joulebench.yamlfile import read_yaml

#: Bundled plans, by mode.
MODES = ("quick", "full")
#: The studies a plan holds, in the order they run (``--skip`` takes these names).
STUDIES = ("precision", "batch", "serving", "shaping")


class StudySweep(SweepConfig):
    """A sweep grid inside a plan: the plan supplies ``name`` and ``study``."""

    name: str = Field("", description="set by the plan")
    study: str = Field("", description="set by the plan")

    def to_sweep(self, plan_name: str, study: str) -> SweepConfig:
        data = self.model_dump(mode="json")
        data.update(name=f"reproduce-{plan_name}-{study}", study=study)
        return SweepConfig.model_validate(data)


def _known_schedulers() -> list[str]:
    from joulebench.serve.schedulers import SCHEDULERS

    return sorted(SCHEDULERS)


def _scheduler(name: str) -> str:
    known = _known_schedulers()
    if name not in known:
        raise ValueError(f"unknown scheduler '{name}'; known: {', '.join(known)}")
    return name


def _parsed(spec: str, parse: Callable[[str], Any], what: str) -> str:
    """``spec`` as given, once ``parse`` reads it: a typo fails at load, naming the spec."""
    try:
        parse(spec)
    except JoulebenchError as exc:
        raise ValueError(f"{what} '{spec}': {exc}") from None
    return spec


def _arrival(spec: str) -> str:
    from joulebench.load.arrivals import parse_arrival

    return _parsed(spec, parse_arrival, "arrival")


def _policy(spec: str) -> str:
    from joulebench.shape.policies import parse_policy

    return _parsed(spec, parse_policy, "policy")


#: A scheduler of the embedded server, by name.
SchedulerName = Annotated[str, AfterValidator(_scheduler)]
#: An arrival process (``poisson:5``), as ``joulebench load --arrival`` takes it.
ArrivalSpec = Annotated[str, AfterValidator(_arrival)]
#: A shaping policy (``cadence:500ms``), as ``joulebench load --via-shape`` takes it.
PolicySpec = Annotated[str, AfterValidator(_policy)]


class ServingPlan(BaseModel):
    """Serving study: ``schedulers`` × ``arrivals`` on one model behind the embedded server."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    precision: str = "fp32"
    schedulers: list[SchedulerName] = Field(min_length=1)
    arrivals: list[ArrivalSpec] = Field(min_length=1)
    n: int = Field(ge=1, description="requests per load run")
    prompts: str = "quick"
    output_length: int = Field(32, ge=1, description="max new tokens per request")
    protocol: str = "openai-chat"
    idle_s: float = Field(2.0, ge=0, description="idle baseline per server start (0: none)")
    warmup_n: int = Field(4, ge=0, description="unmeasured requests after each server start")
    timeout_s: float = Field(120.0, gt=0)
    concurrency: int | None = Field(None, ge=1)
    seed: int = 0
    max_batch_size: int = Field(16, ge=1)
    scheduler_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def load_settings(self) -> dict[str, Any]:
        """What every load of the serving and shaping studies sends with, beside its prompts."""
        return {
            "output_length": self.output_length,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "seed": self.seed,
        }

    @field_validator("arrivals")
    @classmethod
    def _arrivals(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("an arrival pattern is listed twice")
        return v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        from joulebench.load.clients import PROTOCOLS

        if v not in PROTOCOLS:
            raise ValueError(f"unknown protocol '{v}'; known: {', '.join(PROTOCOLS)}")
        return v


class ShapingPlan(BaseModel):
    """Optional shaping comparison: one arrival trace, directly and through each policy."""

    model_config = ConfigDict(extra="forbid")

    scheduler: SchedulerName = "continuous"
    arrival: ArrivalSpec
    policies: list[PolicySpec] = Field(min_length=1)
    n: int = Field(ge=1)
    max_delay_ms: float | None = Field(None, gt=0)


class ReproducePlan(BaseModel):
    """One mode of ``joulebench reproduce``: what each study runs, on which device."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    device: str = "cpu"
    precision: StudySweep | None = None
    batch: StudySweep | None = None
    serving: ServingPlan | None = None
    shaping: ShapingPlan | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        kind = v.strip().lower().partition(":")[0]
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device '{v}': use cpu, cuda or cuda:N")
        return v.strip().lower()

    def models(self) -> list[tuple[str, str]]:
        """(key, model source) of every model the plan loads."""
        out = []
        for study in ("precision", "batch"):
            section = getattr(self, study)
            if section is not None:
                out += [(f"{study}.models", m) for m in section.models]
        if self.serving is not None:
            out.append(("serving.model", self.serving.model))
        return out

    def check_models(self, source: str = "<plan>") -> None:
        """Every model source must parse: a known shape or tiny architecture, an existing
        directory or a hub id (before anything runs)."""
        for key, model in self.models():
            try:
                parse_model_source(model)
            except ConfigError as exc:
                raise ConfigError(f"{source}: key '{key}': {exc}") from None

    @property
    def needs_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def sweeps(self) -> dict[str, SweepConfig]:
        """The precision and batch studies as named sweeps (device forced to the plan's)."""
        out: dict[str, SweepConfig] = {}
        for study in ("precision", "batch"):
            section = getattr(self, study)
            if section is not None:
                sweep = section.to_sweep(self.name, study)
                out[study] = sweep.model_copy(update={"device": self.device})
        return out

    def with_models(self, models: list[str]) -> ReproducePlan:
        """``--models``: the precision study runs all of them; batch and serving the first."""
        models = [m.strip() for m in models if m.strip()]
        if not models:
            raise ConfigError("--models is empty; give one or more model sources, comma-separated")
        update: dict[str, Any] = {}
        if self.precision is not None:
            update["precision"] = self.precision.model_copy(update={"models": models})
        if self.batch is not None:
            update["batch"] = self.batch.model_copy(update={"models": models[:1]})
        if self.serving is not None:
            update["serving"] = self.serving.model_copy(update={"model": models[0]})
        plan = self.model_copy(update=update)
        plan.check_models("--models")
        return plan

    def without(self, skip: list[str]) -> ReproducePlan:
        """``--skip``: drop the named studies (unknown names are errors listing the known ones)."""
        for s in skip:
            if s not in STUDIES:
                raise UnknownName("study", s, list(STUDIES))
        return self.model_copy(update=dict.fromkeys(skip))


def _format_errors(source: str, exc: ValidationError) -> str:
    return validation_message(
        exc,
        f"{source}: invalid reproduce plan",
        name=lambda path: f"key '{path}'",
        known_keys=_fields_at,
        one_per_line=True,
    )


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = ReproducePlan
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = next(
            (a for a in getattr(field.annotation, "__args__", (field.annotation,)) if a),
            None,
        )
    names = list(getattr(model, "model_fields", {}))
    return [n for n in names if not (model is StudySweep and n in ("name", "study"))]


def parse_plan(data: Any, source: str = "<plan>") -> ReproducePlan:
    """Validate a plan mapping; errors name ``source`` and each bad key (``serving.n``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a reproduce plan must be a mapping (name:, precision:, …)")
    for study in ("precision", "batch"):
        section = data.get(study)
        if isinstance(section, dict):
            for key in ("name", "study"):
                if key in section:
                    raise ConfigError(
                        f"{source}: key '{study}.{key}' is set by the plan; remove it"
                    )
    try:
        plan = ReproducePlan.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    if not any(getattr(plan, s) is not None for s in STUDIES):
        raise ConfigError(f"{source}: the plan has no study; add precision:, batch: or serving:")
    plan.check_models(source)
    return plan


def load_plan(path: str | Path) -> ReproducePlan:
    """Read and validate a plan YAML file."""
    return parse_plan(read_yaml(path, "plan file"), str(path))


def bundled_plan(mode: str) -> ReproducePlan:
    """The plan shipped for ``--quick`` or ``--full``."""
    if mode not in MODES:
        raise UnknownName("reproduce mode", mode, list(MODES))
    ref = resources.files("joulebench").joinpath(f"data/reproduce/{mode}.yaml")
    data = yaml.safe_load(ref.read_text(encoding="utf-8"))
    return parse_plan(data, f"joulebench/data/reproduce/{mode}.yaml")
