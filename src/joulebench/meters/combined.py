"""Several meters read as one: e.g. GPU energy from NVML plus CPU package energy from RAPL."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from joulebench.errors import ConfigError
from joulebench.meters.base import Meter, Method, Reading

log = logging.getLogger(__name__)


class CombinedMeter:
    """Merge the domains of several meters. Two meters measuring the same domain is an error.

    The update period is the slowest part's; the reading's timestamp is the latest part's.
    """

    def __init__(self, parts: Sequence[Meter], *, name: str | None = None) -> None:
        if not parts:
            raise ConfigError("a combined meter needs at least one meter")
        owner: dict[str, str] = {}
        for part in parts:
            for domain in part.domains:
                if domain in owner:
                    raise ConfigError(
                        f"meters {owner[domain]!r} and {part.name!r} both measure {domain}; "
                        "combine meters that cover different domains"
                    )
                owner[domain] = part.name
        self.parts = list(parts)
        self.name = name or "+".join(p.name for p in parts)
        self.description = " + ".join(getattr(p, "description", p.name) for p in parts)

    @property
    def domains(self) -> Mapping[str, Method]:
        merged: dict[str, Method] = {}
        for part in self.parts:
            merged.update(part.domains)
        return dict(sorted(merged.items()))

    @property
    def update_period_s(self) -> float:
        return max(p.update_period_s for p in self.parts)

    def read(self) -> Reading:
        energy: dict[str, float] = {}
        stamp = float("-inf")
        for part in self.parts:
            r = part.read()
            energy.update(r.energy_j)
            stamp = max(stamp, r.timestamp_s)
        return Reading(stamp, energy)

    def close(self) -> None:
        errors = []
        for part in self.parts:
            try:
                part.close()
            except Exception as exc:  # close every part even if one fails
                log.warning("closing meter %s failed: %s", part.name, exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    def parameters(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for part in self.parts:
            params = getattr(part, "parameters", None)
            out[part.name] = params() if callable(params) else {}
        return out
