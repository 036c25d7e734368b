"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``).

Per visible GPU the meter uses the hardware total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, millijoules since driver load, Volta and newer;
label ``counter``). Where the counter is not supported it polls ``nvmlDeviceGetPowerUsage``
(milliwatts) at ``poll_hz`` ≥ 10 Hz on a background thread and integrates it with the trapezoid
rule (label ``polled``); every :meth:`NvmlMeter.read` also takes a fresh sample, so the integral
reaches the read instant. Caveat: on recent datacenter GPUs the power reading is itself a ~1 s
moving average, so polled energy lags short bursts; prefer the counter.

Visible GPUs honour ``CUDA_VISIBLE_DEVICES`` like CUDA does: entries are CUDA ordinals, full
UUIDs or unique UUID prefixes (``GPU-…``, the ``GPU-`` part optional) or MIG instance UUIDs
(``MIG-…``); enumeration stops at the first entry that matches nothing. Every entry is mapped to
an NVML index **by UUID**, and domain ``gpu:K`` is CUDA's ``cuda:K`` (the K-th visible device),
never the NVML index. Integer entries are CUDA ordinals, which equal NVML (PCI bus) order only
with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; when torch has already initialised CUDA its per-device UUIDs
are used instead, otherwise PCI bus order is assumed (and logged). A MIG instance is measured
through its parent GPU: the energy then covers the whole physical GPU, a caveat we warn about.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from joulebench.errors import JoulebenchWarning, MeterUnavailable, MissingExtra
from joulebench.extras import require
from joulebench.meters.base import Availability, CounterAccumulator, Method, Reading

log = logging.getLogger(__name__)

COUNTER_UPDATE_PERIOD_S = 0.1  # NVML energy/power refresh period on current NVIDIA GPUs
INSTALL_HINT = (
    "install the NVIDIA driver and `pip install 'joulebench[gpu]'` (nvidia-ml-py); "
    "check that `nvidia-smi` works"
)


def load_pynvml() -> ModuleType:
    """Import ``pynvml`` (from nvidia-ml-py) or raise MissingExtra naming the ``gpu`` extra."""
    return require("pynvml", "gpu", "NVIDIA GPU energy (NVML)")


def _nvml_error(pynvml: ModuleType) -> type[BaseException]:
    return getattr(pynvml, "NVMLError", Exception)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_init(pynvml: ModuleType) -> None:
    """``nvmlInit`` with the vendor error translated into :class:`MeterUnavailable`."""
    try:
        pynvml.nvmlInit()
    except _nvml_error(pynvml) as exc:
        raise MeterUnavailable(f"NVML cannot start ({exc}): {INSTALL_HINT}") from exc


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One measured GPU: its domain, NVML index, UUID and name."""

    domain: str
    nvml_index: int
    uuid: str
    name: str
    mig_uuid: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "nvml_index": self.nvml_index,
            "uuid": self.uuid,
            "name": self.name,
        }
        if self.mig_uuid:
            out["mig_uuid"] = self.mig_uuid
        return out


def _torch_cuda_uuids() -> list[str] | None:
    """UUIDs of CUDA ordinals, only when torch is imported and CUDA already initialised."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    try:
        out = []
        for i in range(torch.cuda.device_count()):
            uuid = str(torch.cuda.get_device_properties(i).uuid)
            out.append(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        return out
    except Exception:  # older torch without .uuid
        return None


def _mig_parents(pynvml: ModuleType, handles: list[Any]) -> dict[str, int]:
    """MIG instance UUID (lower case) → parent NVML index, for GPUs in MIG mode."""
    error = _nvml_error(pynvml)
    out: dict[str, int] = {}
    for index, handle in enumerate(handles):
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
            if not current:
                continue
            count = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except (error, AttributeError):
            continue
        for k in range(count):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)
                out[_text(pynvml.nvmlDeviceGetUUID(mig)).lower()] = index
            except error:
                continue
    return out


def resolve_visible(
    cuda_visible: str | None,
    uuids: list[str],
    *,
    mig_parents: Mapping[str, int] | None = None,
    cuda_uuids: list[str] | None = None,
) -> list[tuple[int, str | None]]:
    """Map ``CUDA_VISIBLE_DEVICES`` to ``[(nvml_index, mig_uuid or None)]`` in CUDA order.

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
        found: tuple[int, str | None] | None = None
        if entry.lstrip("-").isdigit():
            ordinal = int(entry)
            if cuda_uuids is not None and 0 <= ordinal < len(cuda_uuids):
                target = cuda_uuids[ordinal].lower()
                found = (lowered.index(target), None) if target in lowered else None
            elif 0 <= ordinal < len(uuids):
                found = (ordinal, None)
        elif entry.upper().startswith("MIG-"):
            key = entry.lower()
            parents = [p for u, p in (mig_parents or {}).items() if u.startswith(key)]
            if len(parents) == 1:
                found = (parents[0], entry)
        else:
            key = entry.lower() if entry.upper().startswith("GPU-") else f"gpu-{entry.lower()}"
            matches = [i for i, u in enumerate(lowered) if u.startswith(key)]
            if len(matches) == 1:
                found = (matches[0], None)
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


def list_gpus(pynvml: ModuleType | None = None) -> list[dict[str, object]]:
    """Name, UUID, NVML index and driver of every GPU NVML sees (for ``joulebench env``)."""
    pynvml = pynvml or load_pynvml()
    nvml_init(pynvml)
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                {
                    "nvml_index": i,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                    "driver": driver,
                }
            )
        return out
    except _nvml_error(pynvml) as exc:
        raise MeterUnavailable(f"NVML query failed ({exc}): {INSTALL_HINT}") from exc
    finally:
        pynvml.nvmlShutdown()


def probe(pynvml: ModuleType | None = None) -> Availability:
    """Whether NVML can measure here, and if not why and what to do."""
    try:
        gpus = list_gpus(pynvml)
    except MissingExtra as exc:
        return Availability(False, "nvidia-ml-py is not installed", str(exc).split(": ", 1)[-1])
    except MeterUnavailable as exc:
        return Availability(False, str(exc).split(": ", 1)[0], INSTALL_HINT)
    if not gpus:
        return Availability(
            False, "NVML sees no GPU", "check `nvidia-smi` and the container's GPU access"
        )
    return Availability(True, f"{len(gpus)} GPU(s): {', '.join(str(g['name']) for g in gpus)}")


class NvmlMeter:
    """Energy of every visible NVIDIA GPU: hardware counter where supported, else polled power."""

    description = "NVIDIA NVML: total-energy counter (Volta+) or polled power"

    def __init__(
        self,
        *,
        mode: str = "auto",
        poll_hz: float = 20.0,
        cuda_visible_devices: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        pynvml: ModuleType | None = None,
        name: str = "nvml",
    ) -> None:
        if mode not in ("auto", "counter", "polled"):
            raise ValueError(f"nvml mode must be auto, counter or polled, got {mode!r}")
        if poll_hz < 10:
            raise ValueError(f"poll_hz must be at least 10 Hz, got {poll_hz}")
        self.name = name
        self._pynvml = pynvml or load_pynvml()
        self._error = _nvml_error(self._pynvml)
        self._clock = clock
        self._poll_period_s = 1.0 / poll_hz
        nvml_init(self._pynvml)
        try:
            self._open(mode, cuda_visible_devices)
        except BaseException:
            self._pynvml.nvmlShutdown()
            raise

    def _open(self, mode: str, cuda_visible_devices: str | None) -> None:
        nv = self._pynvml
        try:
            count = nv.nvmlDeviceGetCount()
            handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in handles]
            names = [_text(nv.nvmlDeviceGetName(h)) for h in handles]
        except self._error as exc:
            raise MeterUnavailable(f"NVML cannot list GPUs ({exc}): {INSTALL_HINT}") from exc
        env = cuda_visible_devices
        if env is None:
            env = os.environ.get("CUDA_VISIBLE_DEVICES")
        self._cuda_visible = env
        cuda_uuids = _torch_cuda_uuids()
        ordinals = bool(env) and any(e.strip().isdigit() for e in (env or "").split(","))
        pci_order = os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
        if ordinals and cuda_uuids is None and not pci_order and len(set(names)) > 1:
            log.warning(
                "CUDA_VISIBLE_DEVICES uses ordinals on a machine with different GPU models; "
                "assuming PCI bus order. Set CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs."
            )
        mig = _mig_parents(nv, handles) if env and "MIG-" in env.upper() else {}
        visible = resolve_visible(env, uuids, mig_parents=mig, cuda_uuids=cuda_uuids)
        if not visible:
            raise MeterUnavailable(
                f"no GPU is visible (CUDA_VISIBLE_DEVICES={env!r}, NVML sees {count}): "
                "fix CUDA_VISIBLE_DEVICES or pick another --meter"
            )
        self.devices: list[GpuDevice] = []
        self._handles: dict[str, Any] = {}
        for k, (index, mig_uuid) in enumerate(visible):
            dev = GpuDevice(f"gpu:{k}", index, uuids[index], names[index], mig_uuid)
            self.devices.append(dev)
            self._handles[dev.domain] = handles[index]
            if mig_uuid:
                warnings.warn(
                    f"{mig_uuid} is a MIG instance: NVML measures its whole parent GPU "
                    f"{uuids[index]}, including other instances' work",
                    JoulebenchWarning,
                    stacklevel=3,
                )
        self._methods: dict[str, Method] = {}
        self._counters: dict[str, CounterAccumulator] = {}
        for dev in self.devices:
            handle = self._handles[dev.domain]
            if mode != "polled":
                try:
                    first_mj = nv.nvmlDeviceGetTotalEnergyConsumption(handle)
                except self._error as exc:
                    if mode == "counter":
                        raise MeterUnavailable(
                            f"{dev.name} ({dev.domain}) has no total-energy counter ({exc}); "
                            "it needs a Volta or newer GPU: use --nvml-mode polled"
                        ) from exc
                    log.info("%s: no energy counter (%s); polling power", dev.domain, exc)
                else:
                    self._counters[dev.domain] = CounterAccumulator(float(first_mj))
                    self._methods[dev.domain] = Method.COUNTER
                    continue
            self._methods[dev.domain] = Method.POLLED
        self._polled = [d for d, m in self._methods.items() if m is Method.POLLED]
        self._lock = threading.Lock()
        self._poll_energy_j = dict.fromkeys(self._polled, 0.0)
        self._last_sample: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._polled:
            self._sample_power()
            self._thread = threading.Thread(target=self._poll, name="joulebench-nvml", daemon=True)
            self._thread.start()

    # -- polling --------------------------------------------------------------------------------
    def _sample_power(self) -> None:
        with self._lock:
            for domain in self._polled:
                try:
                    power_w = self._pynvml.nvmlDeviceGetPowerUsage(self._handles[domain]) / 1000.0
                except self._error as exc:
                    raise MeterUnavailable(f"NVML power reading failed on {domain}: {exc}") from exc
                now = self._clock()
                last = self._last_sample.get(domain)
                if last is not None and now > last[0]:
                    self._poll_energy_j[domain] += (now - last[0]) * (power_w + last[1]) / 2
                self._last_sample[domain] = (now, power_w)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_period_s):
            try:
                self._sample_power()
            except MeterUnavailable:
                log.exception("NVML power polling failed")

    # -- Meter protocol -------------------------------------------------------------------------
    @property
    def domains(self) -> Mapping[str, Method]:
        return dict(self._methods)

    @property
    def update_period_s(self) -> float:
        return max(COUNTER_UPDATE_PERIOD_S, self._poll_period_s if self._polled else 0.0)

    @property
    def handles(self) -> dict[str, Any]:
        """NVML handle per domain (for the isolation check)."""
        return dict(self._handles)

    @property
    def pynvml(self) -> ModuleType:
        return self._pynvml

    def read(self) -> Reading:
        energy: dict[str, float] = {}
        if self._polled:
            self._sample_power()
        with self._lock:  # the timeline thread and window edges read concurrently
            now = self._clock()
            for domain, acc in self._counters.items():
                try:
                    raw_mj = self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[domain])
                except self._error as exc:
                    raise MeterUnavailable(
                        f"NVML energy reading failed on {domain}: {exc}"
                    ) from exc
                energy[domain] = acc.update(float(raw_mj)) / 1000.0  # mJ → J, once
            energy.update(self._poll_energy_j)
        return Reading(now, {d: energy[d] for d in self._methods})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with contextlib.suppress(self._error):
            self._pynvml.nvmlShutdown()

    def parameters(self) -> dict[str, object]:
        return {
            "devices": {d.domain: d.to_dict() for d in self.devices},
            "poll_hz": 1.0 / self._poll_period_s,
            "cuda_visible_devices": self._cuda_visible,
        }
