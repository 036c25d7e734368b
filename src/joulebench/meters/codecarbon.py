"""CodeCarbon as a meter, for results comparable with the paper (which used CodeCarbon).

Always ``OfflineEmissionsTracker`` with an explicit ISO country code (default ``FRA``): the
online tracker would call an API. Energy is read from the tracker's cumulative totals (kWh,
converted to J once) after forcing a measurement. CodeCarbon sums all tracked GPUs: they appear
as one domain ``gpu:0`` (see ``parameters()['gpu_note']``). Labels: GPU ``counter`` (CodeCarbon
reads NVML's energy counter); CPU ``rapl`` only when CodeCarbon read RAPL, else ``estimated``
(its TDP / load model); RAM ``estimated`` always (CodeCarbon's DIMM heuristic).

This leans on CodeCarbon's private totals (``_total_cpu_energy``…, stable from 2.x to 3.x); a
version without them gives a clear error instead of a wrong number.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from joulebench.errors import ConfigError, MeterUnavailable, MissingExtra
from joulebench.extras import require
from joulebench.meters.base import Availability, Method, Reading

log = logging.getLogger(__name__)

J_PER_KWH = 3.6e6
_TOTALS = {"cpu:0": "_total_cpu_energy", "gpu:0": "_total_gpu_energy", "ram": "_total_ram_energy"}


def probe() -> Availability:
    """Installed or not, without importing CodeCarbon (its import is slow)."""
    if importlib.util.find_spec("codecarbon") is None:
        hint = str(MissingExtra("codecarbon", "codecarbon")).split(": ", 1)[-1]
        return Availability(False, "codecarbon is not installed", hint)
    return Availability(True, "offline tracker (explicit country)")


def _start_tracker(factory: Callable[..., Any], **kwargs: Any) -> Any:
    """No emissions.csv: ``output_methods=[]`` on CodeCarbon ≥ 3, ``save_to_file=False`` before."""
    try:
        tracker = factory(output_methods=[], **kwargs)
    except TypeError:
        tracker = factory(save_to_file=False, **kwargs)
    tracker.start()
    return tracker


class CodeCarbonMeter:
    """Paper-compatible energy from CodeCarbon's offline tracker (CPU, GPU, RAM)."""

    description = "CodeCarbon offline tracker (paper-compatible; CPU/RAM often estimated)"

    def __init__(
        self,
        country_iso_code: str = "FRA",
        *,
        measure_power_secs: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        tracker_factory: Callable[..., Any] | None = None,
        name: str = "codecarbon",
    ) -> None:
        code = country_iso_code.strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise ConfigError(
                f"--codecarbon-country must be an ISO 3166 alpha-3 code such as FRA or USA, got {country_iso_code!r}"
            )
        self.name = name
        self.country = code
        self._clock = clock
        self._period_s = float(measure_power_secs)
        if tracker_factory is None:
            module = require("codecarbon", "codecarbon", "the paper-compatible CodeCarbon meter")
            tracker_factory = module.OfflineEmissionsTracker
        try:
            self._tracker = _start_tracker(
                tracker_factory,
                country_iso_code=code,
                measure_power_secs=measure_power_secs,
                log_level="error",
            )
        except Exception as exc:  # CodeCarbon raises plain exceptions on bad setups
            raise MeterUnavailable(f"CodeCarbon could not start: {exc}") from exc
        if not all(hasattr(self._tracker, attr) for attr in _TOTALS.values()):
            self._tracker.stop()
            raise MeterUnavailable(
                "this CodeCarbon version does not expose its energy totals; "
                "install a 2.x/3.x release: pip install 'joulebench[codecarbon]'"
            )
        self._methods = self._detect_methods()
        self._lock = threading.Lock()
        self._base = self._totals_j()

    def _detect_methods(self) -> dict[str, Method]:
        cpu = Method.ESTIMATED
        gpu_present = False
        for hw in getattr(self._tracker, "_hardware", []):
            kind = type(hw).__name__
            if kind == "CPU" and getattr(hw, "_mode", "") == "intel_rapl":
                cpu = Method.RAPL
            if kind == "GPU":
                gpu_present = True
        methods = {"cpu:0": cpu, "ram": Method.ESTIMATED}
        if gpu_present:
            methods["gpu:0"] = Method.COUNTER
        return dict(sorted(methods.items()))

    def _totals_j(self) -> dict[str, float]:
        return {d: getattr(self._tracker, _TOTALS[d]).kWh * J_PER_KWH for d in self._methods}

    @property
    def domains(self) -> Mapping[str, Method]:
        return dict(self._methods)

    @property
    def update_period_s(self) -> float:
        return self._period_s

    def read(self) -> Reading:
        with self._lock:
            measure = getattr(self._tracker, "_measure_power_and_energy", None)
            if callable(measure):
                measure()
            now = self._clock()
            totals = self._totals_j()
            return Reading(now, {d: totals[d] - self._base[d] for d in self._methods})

    def close(self) -> None:
        try:
            self._tracker.stop()
        except Exception as exc:
            log.warning("stopping CodeCarbon failed: %s", exc)

    def parameters(self) -> dict[str, object]:
        hardware = [str(h) for h in getattr(self._tracker, "_hardware", [])]
        return {
            "country_iso_code": self.country,
            "measure_power_secs": self._period_s,
            "hardware": hardware,
            "gpu_note": "gpu:0 is CodeCarbon's sum over every GPU it tracks",
            "ram_note": "CodeCarbon RAM energy is a heuristic (5 W per estimated DIMM)",
        }
