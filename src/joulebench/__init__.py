"""joulebench: measure, explain and cut the energy of LLM inference.

The names below are the library API; everything else is internal. Importing ``joulebench`` is
cheap: heavy modules (torch, transformers, duckdb, fastapi) load only when a name that needs them
is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from joulebench._version import __version__

_EXPORTS: dict[str, str] = {
    # meters
    "Method": "joulebench.meters.base",
    "Meter": "joulebench.meters.base",
    "Reading": "joulebench.meters.base",
    "EnergyWindow": "joulebench.meters.window",
    "WindowResult": "joulebench.meters.window",
    "measure_idle": "joulebench.meters.window",
    "PowerTimeline": "joulebench.meters.timeline",
    "open_meter": "joulebench.meters.registry",
    "probe_all": "joulebench.meters.registry",
    "FakeMeter": "joulebench.meters.fake",
    "ReplayMeter": "joulebench.meters.replay",
    # workloads
    "load_model": "joulebench.workloads.models",
    "load_prompts": "joulebench.workloads.prompts",
    "OutputLength": "joulebench.workloads.output_length",
    # measurement
    "profile_cell": "joulebench.profile.runner",
    "run_sweep": "joulebench.profile.sweep",
    "run_load": "joulebench.load.runner",
    "embedded_server": "joulebench.serve.launch",
    # results and analysis
    "ResultStore": "joulebench.results.store",
    "estimate": "joulebench.analysis.estimate",
    "build_report": "joulebench.report.build",
    # errors
    "JoulebenchError": "joulebench.errors",
    "JoulebenchWarning": "joulebench.errors",
    "MeterUnavailable": "joulebench.errors",
    "MissingExtra": "joulebench.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'joulebench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
