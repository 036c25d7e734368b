"""Which GPUs a meter measures: the ones the workload uses, never silently every GPU of the node.

Three sources, strongest first:

1. ``--gpus 0,1,2,3`` (NVML indices as ``nvidia-smi`` prints them, or GPU UUIDs / unique UUID
   prefixes): exactly those GPUs.
2. The model's devices (``profile``, ``serve``): :func:`require_gpu_domain` narrows an NVML meter
   that was opened without ``--gpus`` to the GPUs the loaded model sits on.
3. ``CUDA_VISIBLE_DEVICES``: the GPUs this process (and the commands it wraps) can see, mapped
   to NVML indices *by UUID* (``3,5`` means NVML devices 3 and 5, not 0 and 1 — the original
   study's scripts got this wrong).

With none of them, on a node with several GPUs, every GPU is measured and the first read says so
loudly (``gpu_selection`` in the meter's parameters is ``all GPUs (nothing chosen)``).

Domain ``gpu:K`` is the GPU this process calls ``cuda:K``. A run on ``cuda`` whose meter has no
GPU domain is an error (:class:`MissingGpuDomain`); with ``allow_missing=True`` every domain of
that run is relabelled ``estimated`` (:class:`GpuMissingMeter`) and a warning says why.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from joulebench.errors import ConfigError, JoulebenchError, JoulebenchWarning
from joulebench.meters.base import Meter, Method, Reading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One measured GPU: its domain, NVML index, CUDA ordinal in this process, UUID and name."""

    domain: str
    nvml_index: int
    uuid: str
    name: str
    mig_uuid: str | None = None
    cuda_index: int | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "nvml_index": self.nvml_index,
            "cuda_index": self.cuda_index,
            "uuid": self.uuid,
            "name": self.name,
        }
        if self.mig_uuid:
            out["mig_uuid"] = self.mig_uuid
        return out


@dataclass(frozen=True, slots=True)
class Selected:
    """A chosen GPU before it is opened: NVML index, MIG instance, CUDA ordinal here."""

    nvml_index: int
    mig_uuid: str | None
    cuda_index: int


def parse_gpu_list(spec: str | Sequence[str | int] | None) -> list[str] | None:
    """``"0,1, GPU-ab"`` or ``[0, "GPU-ab"]`` → ``["0", "1", "GPU-ab"]``; ``None`` or ``""``: none."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else [str(x) for x in spec]
    entries = [e.strip() for e in items]
    if not any(entries):
        return None
    if any(not e for e in entries):
        raise ConfigError(f"--gpus {spec!r} has an empty entry: use e.g. --gpus 0,1 or GPU UUIDs")
    return entries


def _match_entry(
    entry: str, lowered: Sequence[str], mig_parents: Mapping[str, int]
) -> tuple[int, str | None] | None:
    """One GPU entry (integer index, ``GPU-`` UUID or prefix, ``MIG-`` UUID) → NVML index."""
    if entry.lstrip("-").isdigit():
        index = int(entry)
        return (index, None) if 0 <= index < len(lowered) else None
    if entry.upper().startswith("MIG-"):
        key = entry.lower()
        parents = [p for u, p in mig_parents.items() if u.startswith(key)]
        return (parents[0], entry) if len(parents) == 1 else None
    key = entry.lower() if entry.upper().startswith("GPU-") else f"gpu-{entry.lower()}"
    matches = [i for i, u in enumerate(lowered) if u.startswith(key)]
    return (matches[0], None) if len(matches) == 1 else None


def resolve_visible(
    cuda_visible: str | None,
    uuids: list[str],
    *,
    mig_parents: Mapping[str, int] | None = None,
    cuda_uuids: list[str] | None = None,
) -> list[tuple[int, str | None]]:
    """Map ``CUDA_VISIBLE_DEVICES`` to ``[(nvml_index, mig_uuid or None)]`` in CUDA order.

    Entries are CUDA ordinals, full UUIDs or unique UUID prefixes (``GPU-`` optional) or MIG
    instance UUIDs; like CUDA, enumeration stops at the first entry that matches nothing.
    ``uuids`` are NVML's UUIDs by NVML index. ``cuda_uuids`` (from an initialised CUDA runtime)
    resolves integer entries exactly; without it they are taken in PCI bus (NVML) order.
    """
    lowered = [u.lower() for u in uuids]
    if cuda_visible is None:
        return [(i, None) for i in range(len(uuids))]
    out: list[tuple[int, str | None]] = []
    for raw in cuda_visible.split(","):
        entry = raw.strip()
        if not entry:
            break
        found: tuple[int, str | None] | None
        if entry.lstrip("-").isdigit() and cuda_uuids is not None:
            ordinal = int(entry)
            target = cuda_uuids[ordinal].lower() if 0 <= ordinal < len(cuda_uuids) else None
            found = (lowered.index(target), None) if target in lowered else None
        else:
            found = _match_entry(entry, lowered, mig_parents or {})
        if found is None:
            log.warning(
                "CUDA_VISIBLE_DEVICES entry %r matches no single GPU; like CUDA, ignoring it and "
                "every entry after it",
                entry,
            )
            break
        if found[0] in [i for i, _ in out]:
            log.warning("CUDA_VISIBLE_DEVICES names GPU %s twice; measuring it once", found[0])
            continue
        out.append(found)
    return out


def _describe(uuids: Sequence[str], names: Sequence[str]) -> str:
    return "; ".join(f"{i}: {n} {u}" for i, (u, n) in enumerate(zip(uuids, names, strict=True)))


class GpuSelection(str, Enum):
    """Where a meter's choice of GPUs came from (``gpu_selection`` in its parameters)."""

    GPUS = "--gpus"
    VISIBLE = "CUDA_VISIBLE_DEVICES"
    MODEL = "model devices"
    ALL = "all GPUs (nothing chosen)"

    def __str__(self) -> str:
        return self.value


def select_gpus(
    uuids: list[str],
    names: list[str],
    *,
    gpus: Sequence[str] | None = None,
    cuda_visible: str | None = None,
    mig_parents: Mapping[str, int] | None = None,
    cuda_uuids: list[str] | None = None,
) -> tuple[list[Selected], GpuSelection]:
    """The GPUs to measure and where the choice came from.

    ``gpus`` entries are NVML indices or UUIDs (see :func:`parse_gpu_list`); a GPU they name must
    be visible to this process (``CUDA_VISIBLE_DEVICES``), since its domain is its CUDA ordinal.
    """
    visible = resolve_visible(cuda_visible, uuids, mig_parents=mig_parents, cuda_uuids=cuda_uuids)
    if not gpus:
        chosen = [Selected(i, mig, k) for k, (i, mig) in enumerate(visible)]
        return chosen, GpuSelection.ALL if cuda_visible is None else GpuSelection.VISIBLE
    lowered = [u.lower() for u in uuids]
    out: list[Selected] = []
    for entry in gpus:
        found = _match_entry(entry, lowered, mig_parents or {})
        if found is None:
            raise ConfigError(
                f"--gpus entry {entry!r} matches no single GPU; NVML sees {_describe(uuids, names)}"
            )
        ordinals = [k for k, v in enumerate(visible) if v[0] == found[0]]
        if not ordinals:
            raise ConfigError(
                f"--gpus {entry!r} is NVML GPU {found[0]} ({uuids[found[0]]}), which "
                f"CUDA_VISIBLE_DEVICES={cuda_visible!r} hides from this process: name a visible "
                "GPU or unset CUDA_VISIBLE_DEVICES"
            )
        if any(s.nvml_index == found[0] for s in out):
            raise ConfigError(f"--gpus names GPU {found[0]} ({uuids[found[0]]}) twice")
        out.append(Selected(found[0], found[1] or visible[ordinals[0]][1], ordinals[0]))
    return out, GpuSelection.GPUS


# --------------------------------------------------------------------------------------------
# The workload's devices
# --------------------------------------------------------------------------------------------


def cuda_ordinals(devices: Iterable[Any]) -> list[int]:
    """CUDA ordinals of ``devices`` (torch devices or strings like ``"cuda:1"``), sorted, distinct.

    A bare ``cuda`` is the current CUDA device (ordinal 0 when torch has not chosen one).
    """
    out: set[int] = set()
    for dev in devices:
        kind = getattr(dev, "type", None)
        index = getattr(dev, "index", None)
        if kind is None:
            text = str(dev)
            kind, _, rest = text.partition(":")
            index = int(rest) if rest.isdigit() else None
        if kind != "cuda":
            continue
        if index is None:
            index = _current_cuda_device()
        out.add(int(index))
    return sorted(out)


def _current_cuda_device() -> int:
    import sys

    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return int(torch.cuda.current_device())
    except Exception:  # a broken CUDA runtime: fall back to CUDA's default device
        log.debug("cannot ask torch for the current CUDA device", exc_info=True)
    return 0


def model_devices(model: Any) -> list[Any]:
    """Every device a torch model's parameters and buffers live on (``[]`` for a non-torch model)."""
    seen: dict[str, Any] = {}
    for attr in ("parameters", "buffers"):
        tensors = getattr(model, attr, None)
        for tensor in tensors() if callable(tensors) else ():
            seen.setdefault(str(tensor.device), tensor.device)
    return list(seen.values())


class MissingGpuDomain(JoulebenchError):
    """A workload runs on a GPU that the meter does not measure."""

    exit_code = 2


def _gpu_domains(meter: Meter) -> list[str]:
    return [d for d in meter.domains if d.startswith("gpu:")]


def _nvml_parts(meter: Meter) -> list[Any]:
    from joulebench.meters.nvml import NvmlMeter

    if isinstance(meter, NvmlMeter):
        return [meter]
    return [p for part in getattr(meter, "parts", ()) for p in _nvml_parts(part)]


_POLICY: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def set_allow_missing_gpu(meter: Meter, allow: bool) -> None:
    """Record ``--allow-missing-gpu`` for ``meter``: :func:`require_gpu_domain` uses it later."""
    try:
        _POLICY[meter] = bool(allow)
    except TypeError:  # a meter class without weak references: the caller passes allow_missing
        log.debug("meter %s cannot carry the --allow-missing-gpu policy", meter.name)


def require_gpu_domain(
    meter: Meter, devices: Iterable[Any], *, allow_missing: bool | None = None
) -> Meter:
    """Check that ``meter`` measures every GPU ``devices`` use and return the meter to use.

    * No CUDA device: ``meter`` unchanged.
    * An NVML meter opened without ``--gpus`` is narrowed to the workload's GPUs.
    * A GPU of the workload is not measured: :class:`MissingGpuDomain` saying what to do, unless
      ``allow_missing`` (default: the policy set by ``--allow-missing-gpu``), which returns a
      :class:`GpuMissingMeter` labelling every domain ``estimated`` and warns.
    """
    ordinals = cuda_ordinals(devices)
    if not ordinals:
        return meter
    wanted = [f"gpu:{k}" for k in ordinals]
    for part in _nvml_parts(meter):
        part.focus(ordinals)
    missing = [d for d in wanted if d not in meter.domains]
    if not missing:
        return meter
    allowed = _POLICY.get(meter, False) if allow_missing is None else allow_missing
    have = _gpu_domains(meter)
    what = (
        f"the workload runs on {', '.join(f'cuda:{k}' for k in ordinals)} but meter "
        f"{meter.name!r} measures {', '.join(have) if have else 'no GPU'}"
    )
    if not allowed:
        raise MissingGpuDomain(
            f"{what}: its energy would be missing from every number. Use --meter nvml (install "
            "'joulebench[gpu]'), --meter prometheus with the DCGM exporter, or name the GPUs "
            "with --gpus; --allow-missing-gpu labels the result estimated instead"
        )
    note = f"{what}: every figure of this run is labelled estimated (--allow-missing-gpu)"
    warnings.warn(note, JoulebenchWarning, stacklevel=2)
    log.warning("%s", note)
    return GpuMissingMeter(meter, note)


class GpuMissingMeter:
    """``meter`` with every domain labelled ``estimated``: a GPU run whose GPU is not measured."""

    def __init__(self, meter: Meter, note: str) -> None:
        self.inner = meter
        self.note = note
        self.name = f"{meter.name} (GPU not measured)"
        self.description = f"{getattr(meter, 'description', meter.name)}; GPU NOT MEASURED"

    @property
    def domains(self) -> Mapping[str, Method]:
        return dict.fromkeys(self.inner.domains, Method.ESTIMATED)

    @property
    def update_period_s(self) -> float:
        return self.inner.update_period_s

    def read(self) -> Reading:
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def parameters(self) -> dict[str, object]:
        params = getattr(self.inner, "parameters", None)
        return {
            "gpu_missing": self.note,
            "measured_methods": {d: str(m) for d, m in self.inner.domains.items()},
            "inner": dict(params() if callable(params) else params or {}),
        }
