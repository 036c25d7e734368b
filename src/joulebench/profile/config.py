"""User-facing configuration of one profile cell (pydantic; shared by ``profile`` and ``sweep``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from joulebench.meters.host import DEFAULT_MAX_OTHER_CORES, ContentionMode, ContentionPolicy
from joulebench.profile.batching import parse_bucketing

Method = Literal["direct", "subtraction", "both"]
WarmupRule = Literal["settled", "exact"]

#: How the host's other processes are handled is not part of a cell's identity: a resumed sweep
#: with another policy skips the cells already done (each stored with its quiet_host audit).
CONTENTION_FIELDS = frozenset(
    {"on_contention", "quiet_cores", "quiet_s", "contention_max_reruns", "contention_max_wait_s"}
)


class MeasurementSettings(BaseModel):
    """How a cell is measured: shared by one ``profile`` cell and a whole sweep file."""

    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(None, ge=1, description="number of prompts (None: the set's default)")
    method: Method = "both"
    output_length: str = "reference"
    warmup: int = Field(
        5, ge=0, description="warm-ups per measurement: a cap (settled) or the count (exact)"
    )
    warmup_rule: WarmupRule = Field(
        "settled",
        description="settled: stop once two warm-ups in a row agree within 10 %; exact: run "
        "all `warmup` of them (the study's protocol)",
    )
    min_window_s: float | None = Field(
        None, gt=0, description="None: max(0.25 s, 10 × the meter's update period)"
    )
    ci_target: float = Field(0.02, gt=0, lt=1)
    min_repeats: int = Field(3, ge=2)
    max_repeats: int = Field(10, ge=2)
    consistency_tolerance: float = Field(0.05, gt=0, lt=1)
    device: str = "cpu"
    seed: int = 0
    # other processes during the windows (joulebench.meters.host): flag, wait or fail
    on_contention: ContentionMode = "flag"
    quiet_cores: float = Field(
        DEFAULT_MAX_OTHER_CORES, ge=0, description="cores other processes may use per window"
    )
    quiet_s: float = Field(3.0, gt=0, description="wait: seconds the host must stay quiet")
    contention_max_reruns: int = Field(3, ge=0, description="wait: re-runs of busy windows")
    contention_max_wait_s: float = Field(120.0, ge=0, description="wait: total seconds waited")

    @field_validator("output_length", mode="before")
    @classmethod
    def _output_length(cls, v: Any) -> str:
        """What ``--output-length`` takes, read by its one parser; a YAML ``32`` is ``"32"``.

        Kept as the (normalised) text: it is part of the cell key.
        """
        from joulebench.errors import ConfigError
        from joulebench.workloads.output_length import OutputLength

        try:
            OutputLength.parse(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return str(v).strip().lower()

    @field_validator("max_repeats")
    @classmethod
    def _max_repeats(cls, v: int, info: Any) -> int:
        lo = info.data.get("min_repeats", 2)
        if v < lo:
            raise ValueError(f"max_repeats ({v}) must be ≥ min_repeats ({lo})")
        return v

    def contention_policy(self) -> ContentionPolicy:
        return ContentionPolicy(
            mode=self.on_contention,
            max_other_cores=self.quiet_cores,
            quiet_s=self.quiet_s,
            max_reruns=self.contention_max_reruns,
            max_wait_s=self.contention_max_wait_s,
        )

    def measurement_settings(self) -> dict[str, Any]:
        """These settings alone, as keyword arguments for another config."""
        return {name: getattr(self, name) for name in MeasurementSettings.model_fields}


class ProfileConfig(MeasurementSettings):
    """Everything that defines one measured cell; its hash is the sweep's ``cell_key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        description="model source: tiny, tiny:<arch>:<size>, shape:<Name>, a path or a hub id"
    )
    precision: str = "fp32"
    batch_size: int = Field(1, ge=1)
    prompts: str = "quick"
    bucketing: str = "none"
    compile: bool = False

    @field_validator("bucketing")
    @classmethod
    def _bucketing(cls, v: str) -> str:
        parse_bucketing(v)
        return v.strip().lower()

    def cell_key(self) -> str:
        """Stable hash of the cell's config (sorted JSON, sha256, 16 hex digits)."""
        config = self.model_dump(mode="json", exclude=set(CONTENTION_FIELDS))
        blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
