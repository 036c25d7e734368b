"""Replay a recorded energy trace from a CSV file, as if it were a live meter.

File format (a header row is required; extra columns are ignored)::

    t_s,domain,energy_j[,method]
    0.0,gpu:0,0.0
    0.1,gpu:0,30.2
    0.1,cpu:0,4.1

- ``t_s``: seconds since the start of the recording (any origin; the first row is time zero).
- ``domain``: ``gpu:N``, ``cpu:N``, ``dram:N`` or ``ram``.
- ``energy_j``: **cumulative** energy of that domain in joules (not power), non-decreasing over
  time; the replayed value is relative to the domain's first row.
- ``method`` (optional): how the recording was made (``counter``, ``rapl``…). It is kept in
  :meth:`ReplayMeter.parameters` as ``recorded_methods``; the live label is always ``replay``.

Between rows the value holds (like a hardware counter that updates only at each row); before a
domain's first row it is zero and after the last row it stays at the last value. Rows of each
domain must be in time order. Malformed rows raise :class:`ConfigError` naming the line.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from joulebench.errors import ConfigError
from joulebench.meters.base import DOMAIN_PATTERN, Method, Reading

REQUIRED_COLUMNS = ("t_s", "domain", "energy_j")


class ReplayMeter:
    """Replays cumulative energy per domain from a CSV recording against a (injectable) clock."""

    description = "replay of a recorded energy trace"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        speed: float = 1.0,
        name: str = "replay",
    ) -> None:
        if not speed > 0:
            raise ConfigError(f"replay speed must be positive, got {speed}")
        self.name = name
        self.path = Path(path)
        self._clock = clock
        self._speed = float(speed)
        self._times, self._values, self._recorded = _load(self.path)
        self._t_origin = min(ts[0] for ts in self._times.values())
        self._t0 = clock()

    @property
    def domains(self) -> Mapping[str, Method]:
        return dict.fromkeys(sorted(self._times), Method.REPLAY)

    @property
    def update_period_s(self) -> float:
        """Median spacing between consecutive rows of a domain (the recording's refresh period)."""
        gaps = [b - a for ts in self._times.values() for a, b in itertools.pairwise(ts) if b > a]
        return statistics.median(gaps) / self._speed if gaps else 0.0

    @property
    def duration_s(self) -> float:
        end = max(ts[-1] for ts in self._times.values())
        return (end - self._t_origin) / self._speed

    def energy_at(self, elapsed_s: float) -> dict[str, float]:
        """Replayed cumulative energy per domain ``elapsed_s`` seconds after the meter opened."""
        t = self._t_origin + elapsed_s * self._speed
        out = {}
        for domain, ts in self._times.items():
            i = bisect.bisect_right(ts, t + 1e-12)
            values = self._values[domain]
            out[domain] = 0.0 if i == 0 else values[i - 1] - values[0]
        return out

    def read(self) -> Reading:
        now = self._clock()
        return Reading(now, self.energy_at(now - self._t0))

    def close(self) -> None:
        pass

    def parameters(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "speed": self._speed,
            "rows": sum(len(v) for v in self._times.values()),
            "recorded_methods": dict(self._recorded),
        }


def _load(
    path: Path,
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, str]]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the replay file {path}: {exc.strerror}") from exc
    times: dict[str, list[float]] = {}
    values: dict[str, list[float]] = {}
    recorded: dict[str, str] = {}
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ConfigError(
                f"{path}:1: the header must contain {', '.join(REQUIRED_COLUMNS)}[,method]; "
                f"missing {', '.join(missing)}"
            )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise ConfigError(f"{where}: expected {len(header)} columns ({', '.join(header)})")
            domain = row["domain"].strip()
            if not DOMAIN_PATTERN.match(domain):
                raise ConfigError(
                    f"{where}: invalid domain {domain!r}; expected gpu:N, cpu:N, dram:N or ram"
                )
            t_s = _number(row["t_s"], "t_s", where)
            energy_j = _number(row["energy_j"], "energy_j", where)
            if energy_j < 0:
                raise ConfigError(f"{where}: energy_j must be non-negative, got {energy_j}")
            ts = times.setdefault(domain, [])
            vs = values.setdefault(domain, [])
            if ts and t_s < ts[-1]:
                raise ConfigError(
                    f"{where}: t_s {t_s} goes back in time for {domain} (previous {ts[-1]}); "
                    "sort the rows of each domain by t_s"
                )
            if vs and energy_j < vs[-1]:
                raise ConfigError(
                    f"{where}: energy_j decreased for {domain} ({vs[-1]} → {energy_j}); "
                    "the file must hold cumulative energy in joules, not power"
                )
            ts.append(t_s)
            vs.append(energy_j)
            method = (row.get("method") or "").strip()
            if method:
                recorded[domain] = method
    if not times:
        raise ConfigError(f"{path}: the replay file has no data rows")
    return times, values, recorded


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {column} must be a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {column} must be finite, got {text.strip()!r}")
    return value
