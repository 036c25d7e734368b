"""User-facing configuration of one profile cell (pydantic; shared by ``profile`` and ``sweep``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from joulebench.profile.batching import parse_bucketing

Method = Literal["direct", "subtraction", "both"]


class MeasurementSettings(BaseModel):
    """How a cell is measured: shared by one ``profile`` cell and a whole sweep file."""

    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(None, ge=1, description="number of prompts (None: the set's default)")
    method: Method = "both"
    output_length: str = "reference"
    warmup: int = Field(5, ge=0)
    min_window_s: float = Field(1.0, gt=0)
    ci_target: float = Field(0.02, gt=0, lt=1)
    min_repeats: int = Field(3, ge=2)
    max_repeats: int = Field(10, ge=2)
    consistency_tolerance: float = Field(0.05, gt=0, lt=1)
    device: str = "cpu"
    seed: int = 0

    @field_validator("output_length")
    @classmethod
    def _output_length(cls, v: str) -> str:
        s = v.strip().lower()
        if s in ("natural", "reference"):
            return s
        if s.isdigit() and int(s) >= 1:
            return s
        raise ValueError(f"output length {v!r}: use natural, reference or a positive integer N")

    @field_validator("max_repeats")
    @classmethod
    def _max_repeats(cls, v: int, info: Any) -> int:
        lo = info.data.get("min_repeats", 2)
        if v < lo:
            raise ValueError(f"max_repeats ({v}) must be ≥ min_repeats ({lo})")
        return v

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
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
