"""The study's headline numbers and trends, as data, and their side-by-side with a store.

Source: J. Delavande, R. Pierrard, S. Luccioni, "Understanding Efficiency: Quantization,
Batching, and Serving Strategies in LLM Energy Use" (2026). The study ran on one NVIDIA H100 with
transformers and TGI and measured energy with CodeCarbon (GPU through NVML, CPU through RAPL, RAM
by a heuristic). Numbers here are quoted as the study reports them, including those an audit
questions (see ``caveat``). The headline figures are package data
(``joulebench/data/paper_headlines.yaml``), read and validated on first use (:func:`headlines`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from joulebench.analysis.records import ACCOUNTINGS, LoadRun, ProfileCell, StoreContents
from joulebench.errors import ConfigError
from joulebench.validation import validation_message

CITATION = (
    "Delavande, Pierrard, Luccioni (2026), Understanding Efficiency: Quantization, Batching, "
    "and Serving Strategies in LLM Energy Use"
)
PAPER_HARDWARE = "1× NVIDIA H100 (80 GB); energy by CodeCarbon (NVML GPU, RAPL CPU, RAM heuristic)"
SERVING_STUDY = f"{CITATION}, serving study"
#: The headline table, package data: ``src/joulebench/data/paper_headlines.yaml``.
HEADLINES_FILE = "data/paper_headlines.yaml"


@dataclass(frozen=True, slots=True)
class PaperHeadline:
    """One per-request figure of the study's serving study, and how to find its counterpart
    among load runs (same arrival kind and scheduler, and interval where one is given)."""

    # Validated from package data (pydantic reads stdlib dataclasses): a misspelt key is refused.
    __pydantic_config__ = ConfigDict(extra="forbid")

    key: str
    label: str
    value: float
    setting: str
    arrival_kind: str
    scheduler: str
    unit: Literal["Wh/request"] = "Wh/request"  # compare() reads every headline as Wh/request
    citation: str = SERVING_STUDY
    interval_ms: float | None = None
    caveat: str = ""


@dataclass(frozen=True, slots=True)
class PaperTrend:
    """A qualitative finding, and the figure of the report where to check it."""

    key: str
    claim: str
    figure: str
    citation: str


def parse_headlines(data: Any, source: str) -> tuple[PaperHeadline, ...]:
    """Validate a headline table (a list of mappings, ``PaperHeadline``'s fields)."""
    try:
        return TypeAdapter(tuple[PaperHeadline, ...]).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, f"invalid headline table {source}")) from None


@functools.cache
def headlines() -> tuple[PaperHeadline, ...]:
    """The study's headline figures (the bundled table, read once)."""
    text = resources.files("joulebench").joinpath(HEADLINES_FILE).read_text(encoding="utf-8")
    return parse_headlines(yaml.safe_load(text), f"joulebench/{HEADLINES_FILE}")


TRENDS: tuple[PaperTrend, ...] = (
    PaperTrend(
        "precision",
        "Lower precision (bitsandbytes int8/int4) does not reliably cut energy; gains, where they "
        "exist, are in compute-bound prefill, while memory-bound decode can cost more "
        "(dequantization overhead).",
        "energy_model_precision",
        f"{CITATION}, quantization study",
    ),
    PaperTrend(
        "batch_prefill",
        "Prefill energy per effective input token rises with batch size (padding is computed).",
        "energy_per_token_batch",
        f"{CITATION}, batching study (Llama-3.1-8B, fp32, static batches)",
    ),
    PaperTrend(
        "batch_decode",
        "Decode energy is U-shaped in batch size, with an optimum near b = 4.",
        "energy_per_token_batch",
        f"{CITATION}, batching study",
    ),
    PaperTrend(
        "batch_output",
        "Energy per output token falls roughly logarithmically with batch size.",
        "energy_per_token_batch",
        f"{CITATION}, batching study",
    ),
    PaperTrend(
        "arrival_shaping",
        "Structured arrivals (fixed intervals) with continuous batching cut per-request energy "
        "by about two orders of magnitude versus naive sequential serving (1.2e-1 → 1.1e-3 Wh).",
        "energy_per_request_arrival",
        SERVING_STUDY,
    ),
)

#: The study's macro example: 1e6 requests/day.
MACRO_EXAMPLE_REQUESTS_PER_DAY = 1_000_000
HOUSEHOLD_KWH_PER_YEAR = 4255.0


@dataclass(frozen=True, slots=True)
class Comparison:
    """A headline beside what this store measured for the closest setting."""

    headline: PaperHeadline
    here_wh: dict[str, float]
    here_run: str | None
    here_method: str | None
    hardware_note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.headline.key,
            "paper_value": self.headline.value,
            "unit": self.headline.unit,
            "paper_setting": self.headline.setting,
            "citation": self.headline.citation,
            "caveat": self.headline.caveat,
            "here_wh_per_request": dict(self.here_wh),
            "here_run": self.here_run,
            "here_method": self.here_method,
            "hardware_note": self.hardware_note,
        }


def _arrival_kind(lr: LoadRun) -> str:
    a = lr.run.config.get("arrival")
    if isinstance(a, dict):
        return str(a.get("kind") or a.get("name") or "")
    return str(a or "")


def _interval_ms(lr: LoadRun) -> float | None:
    a = lr.run.config.get("arrival")
    if not isinstance(a, dict):
        return None
    if isinstance(a.get("interval_ms"), int | float):
        return float(a["interval_ms"])
    if isinstance(a.get("interval_s"), int | float):
        return float(a["interval_s"]) * 1000.0
    spec = str(a.get("spec") or "")
    m = re.fullmatch(r"fixed:([0-9.]+)(ms|s)", spec.strip())
    if m:
        return float(m.group(1)) * (1.0 if m.group(2) == "ms" else 1000.0)
    return None


#: Engine presets that batch continuously by default (TGI is the study's own): a run against
#: one launched by ``--engine`` (scheduler ``engine:<preset>``) stands beside the study's
#: continuous-batching figures. ``engine:custom`` (``--launch``) is not known to.
CONTINUOUS_ENGINES = frozenset({"tgi", "vllm", "sglang", "trtllm", "llamacpp", "joulebench"})


def _same_scheduler(run: str, study: str) -> bool:
    if run == study:
        return True
    engine = run.removeprefix("engine:")
    return study == "continuous" and engine != run and engine in CONTINUOUS_ENGINES


def _matches(h: PaperHeadline) -> Callable[[LoadRun], bool]:
    def ok(lr: LoadRun) -> bool:
        if lr.shaped or _arrival_kind(lr) != h.arrival_kind:
            return False
        if not _same_scheduler(lr.scheduler, h.scheduler):
            return False
        return h.interval_ms is None or _interval_ms(lr) == h.interval_ms

    return ok


def hardware_note(environment: dict[str, Any]) -> str:
    """How this run's hardware differs from the study's H100."""
    gpu = environment.get("gpu") or environment.get("gpus")
    if isinstance(gpu, list):
        gpu = ", ".join(str(g.get("name", g) if isinstance(g, dict) else g) for g in gpu)
    elif isinstance(gpu, dict):
        gpu = gpu.get("name")
    cpu = environment.get("cpu")
    if isinstance(cpu, dict):
        cpu = cpu.get("model") or cpu.get("name")
    if gpu and "H100" in str(gpu):
        return f"same GPU family ({gpu}); models, software and meters may still differ"
    here = f"GPU {gpu}" if gpu else f"no GPU (CPU {cpu or 'unknown'})"
    return f"different hardware: {here} vs the study's H100 — compare trends, not absolute values"


def compare(contents: StoreContents) -> list[Comparison]:
    """Each headline beside the latest matching load run (if any)."""
    out = []
    for h in headlines():
        match = [lr for lr in contents.load_runs if _matches(h)(lr)]
        if not match:
            out.append(Comparison(h, {}, None, None, "no matching load run in this store"))
            continue
        lr = match[-1]
        here = {a: v for a in ACCOUNTINGS if (v := lr.per_request_wh(a)) is not None}
        note = hardware_note(lr.run.environment)
        if lr.scheduler != h.scheduler:
            note = f"measured on {lr.scheduler} (continuous batching); {note}"
        out.append(Comparison(h, here, lr.run.run_id, lr.run.method, note))
    return out


def batch_observations(cells: Sequence[ProfileCell]) -> dict[str, str]:
    """What this store shows for the batching trends (unbucketed cells of one model/precision)."""
    plain = [c for c in cells if c.ok and c.batch_size is not None and not c.bucketing]
    groups: dict[tuple[str, str], list[ProfileCell]] = {}
    for c in plain:
        groups.setdefault((c.model, c.precision), []).append(c)
    groups = {k: v for k, v in groups.items() if len({c.batch_size for c in v}) >= 2}
    if not groups:
        return {}
    (model, precision), group = max(groups.items(), key=lambda kv: len(kv[1]))
    group = sorted(group, key=lambda c: c.batch_size or 0)
    lo, hi = group[0], group[-1]
    obs: dict[str, str] = {}
    tag = f"{model} {precision}, b={lo.batch_size}→{hi.batch_size}"
    for key, token in (("batch_prefill", "effective_input"), ("batch_output", "output")):
        a, b = lo.per_token_j()[token], hi.per_token_j()[token]
        if a is not None and b is not None and a > 0:
            trend = "rises" if b > a else "falls"
            obs[key] = f"{trend}: {a:.3g} → {b:.3g} J/token ({tag})"
    decode = [
        (c.batch_size, p.energy_j / (c.batch_size or 1))
        for c in group
        if (p := c.phase("decode")) is not None and p.energy_j is not None
    ]
    if len(decode) >= 2:
        best = min(decode, key=lambda x: x[1])
        obs["batch_decode"] = f"decode J/request lowest at b={best[0]} ({best[1]:.3g} J; {tag})"
    return obs
