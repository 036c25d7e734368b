"""CPU package and DRAM energy through the Linux powercap RAPL interface.

Zones live under ``/sys/class/powercap`` (configurable for tests): top-level zones
``intel-rapl:N`` (name ``package-N``) become domain ``cpu:N``; their sub-zone named ``dram``
becomes ``dram:N``. ``core``/``uncore`` sub-zones are parts of the package and ``psys`` covers the
whole platform, so neither is counted (it would double count). ``intel-rapl-mmio:*`` zones repeat
the MSR ones on some machines: zones are deduplicated by name, MSR first. AMD CPUs appear through
the same ``intel-rapl`` tree on recent kernels.

``energy_uj`` is a microjoule counter that wraps at ``max_energy_range_uj``; it is converted to
joules once, in :meth:`RaplMeter.read`. It can wrap within about a minute at full load, so read
at least that often (the timeline sampler does). Since Linux 5.10 ``energy_uj`` is readable by
root only; the error says how to grant access.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from joulebench.errors import MeterUnavailable
from joulebench.meters.base import Availability, CounterAccumulator, Method, Reading

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/class/powercap")
UPDATE_PERIOD_S = 0.001  # RAPL counters refresh about every millisecond
_ZONE = re.compile(r"^intel-rapl(-mmio)?:(\d+)$")
_PACKAGE = re.compile(r"^package-(\d+)$")
PERMISSION_HINT = (
    "energy_uj is readable by root only since Linux 5.10: run "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*:*/energy_uj` (until reboot) or run with sudo"
)


@dataclass(frozen=True, slots=True)
class RaplZone:
    domain: str
    path: Path
    max_energy_range_uj: int


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError as exc:
        raise MeterUnavailable(f"permission denied reading {path}: {PERMISSION_HINT}") from exc
    except (OSError, ValueError) as exc:
        raise MeterUnavailable(f"cannot read RAPL file {path}: {exc}") from exc


def discover_zones(root: str | Path = DEFAULT_ROOT) -> list[RaplZone]:
    """Package and DRAM zones under ``root``, deduplicated, in domain order."""
    root = Path(root)
    if not root.is_dir():
        raise MeterUnavailable(
            f"{root} does not exist: no Linux powercap interface (not Linux, a VM or container "
            "without RAPL, or the intel_rapl_common module is not loaded: `sudo modprobe "
            "intel_rapl_msr`)"
        )
    tops = sorted(
        (p for p in root.iterdir() if _ZONE.match(p.name)),
        key=lambda p: (bool(_ZONE.match(p.name).group(1)), int(_ZONE.match(p.name).group(2))),  # type: ignore[union-attr]
    )
    zones: dict[str, RaplZone] = {}
    for top in tops:
        name = _zone_name(top)
        match = _PACKAGE.match(name or "")
        if match is None:
            log.debug("skipping RAPL zone %s (%s)", top.name, name)
            continue
        package = int(match.group(1))
        _add(zones, f"cpu:{package}", top)
        for sub in sorted(top.glob(f"{top.name}:*")):
            if _zone_name(sub) == "dram":
                _add(zones, f"dram:{package}", sub)
    if not zones:
        raise MeterUnavailable(
            f"no RAPL package zone under {root} (this CPU or hypervisor does not expose RAPL)"
        )
    return [zones[d] for d in sorted(zones)]


def _zone_name(path: Path) -> str | None:
    try:
        return (path / "name").read_text().strip()
    except OSError:
        return None


def _add(zones: dict[str, RaplZone], domain: str, path: Path) -> None:
    if domain in zones:
        log.debug("RAPL zone %s duplicates %s; ignored", path, zones[domain].path)
        return
    zones[domain] = RaplZone(domain, path, _read_int(path / "max_energy_range_uj"))


def probe(root: str | Path = DEFAULT_ROOT) -> Availability:
    try:
        zones = discover_zones(root)
        for z in zones:
            _read_int(z.path / "energy_uj")
    except MeterUnavailable as exc:
        text = str(exc)
        reason, _, hint = text.partition(": ")
        return Availability(False, reason, hint)
    return Availability(True, ", ".join(z.domain for z in zones))


class RaplMeter:
    """CPU package (and DRAM) energy from RAPL counters, wraparound-corrected."""

    description = "Linux powercap RAPL energy counters (CPU package, DRAM)"

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "rapl",
    ) -> None:
        self.name = name
        self.root = Path(root)
        self._clock = clock
        self.zones = discover_zones(self.root)
        self._lock = threading.Lock()
        self._acc = {
            z.domain: CounterAccumulator(_read_int(z.path / "energy_uj"), z.max_energy_range_uj)
            for z in self.zones
        }

    @property
    def domains(self) -> Mapping[str, Method]:
        return {z.domain: Method.RAPL for z in self.zones}

    @property
    def update_period_s(self) -> float:
        return UPDATE_PERIOD_S

    def read(self) -> Reading:
        with self._lock:  # the timeline thread and window edges read concurrently
            now = self._clock()
            energy = {
                z.domain: self._acc[z.domain].update(_read_int(z.path / "energy_uj")) / 1e6  # µJ→J
                for z in self.zones
            }
        return Reading(now, energy)

    def close(self) -> None:
        pass

    def parameters(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "zones": {z.domain: z.path.name for z in self.zones},
            "max_energy_range_j": {z.domain: z.max_energy_range_uj / 1e6 for z in self.zones},
        }
