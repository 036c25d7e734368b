"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``).

Per measured GPU the meter uses the hardware total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, millijoules since driver load, Volta and newer;
label ``counter``). Where the counter is not supported it polls power at ``poll_hz`` ≥ 10 Hz on a
background thread and integrates it with the trapezoid rule; every :meth:`NvmlMeter.read` also
takes a fresh sample, so the integral reaches the read instant. Power comes from NVML's
instantaneous field (``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_POWER_INSTANT``, label
``polled-instant``) where the GPU has it; otherwise from ``nvmlDeviceGetPowerUsage`` (label
``polled``), which on recent datacenter GPUs is a ~1 s moving average that lags short bursts.

Which GPUs: see :mod:`joulebench.meters.gpus` (``--gpus``, the model's devices,
``CUDA_VISIBLE_DEVICES``, mapped to NVML indices by UUID; domain ``gpu:K`` is ``cuda:K``). The
choice, with names, UUIDs and both indices, is in :meth:`NvmlMeter.parameters`. A MIG instance is
measured through its parent GPU: the energy then covers the whole physical GPU (a warning says so).

Update period: when the meter opens it polls the counters (or power readings) until each changed a
few times (:func:`joulebench.meters.period.measure_update_period`, at most ~1.5 s) and uses that
period for the window-length rule and each window's quantisation error; only if nothing changed
in time does it fall back to 100 ms, recorded as ``assumed``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from joulebench.errors import JoulebenchWarning, MeterUnavailable, MissingExtra
from joulebench.extras import require
from joulebench.meters.base import Availability, CounterAccumulator, Method, Reading
from joulebench.meters.gpus import (
    GpuDevice,
    GpuSelection,
    parse_gpu_list,
    resolve_visible,
    select_gpus,
)
from joulebench.meters.period import measure_update_period
from joulebench.meters.periodic import Periodic

__all__ = ["GpuDevice", "NvmlMeter", "list_gpus", "probe", "resolve_visible"]

log = logging.getLogger(__name__)

ASSUMED_UPDATE_PERIOD_S = 0.1  # used only when the probe saw no change (recorded as assumed)
POWER_INSTANT_FIELD = 186  # NVML_FI_DEV_POWER_INSTANT (milliwatts), if the bindings lack it
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


def _instant_power_mw(pynvml: ModuleType, handle: Any) -> float | None:
    """NVML's instantaneous power field in mW, or ``None`` where the GPU or driver lacks it."""
    fn = getattr(pynvml, "nvmlDeviceGetFieldValues", None)
    if fn is None:
        return None
    field = getattr(pynvml, "NVML_FI_DEV_POWER_INSTANT", POWER_INSTANT_FIELD)
    try:
        value = fn(handle, [field])[0]
    except (_nvml_error(pynvml), IndexError, TypeError):
        return None
    if int(getattr(value, "nvmlReturn", 1)) != getattr(pynvml, "NVML_SUCCESS", 0):
        return None
    kind = int(getattr(value, "valueType", 1))
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    raw = getattr(value.value, attr.get(kind, "uiVal"))
    return float(raw) if raw and raw > 0 else None


class NvmlMeter:
    """Energy of the NVIDIA GPUs the workload uses: hardware counter where supported, else polled
    power (instantaneous where available).

    ``gpus``: explicit choice (see :mod:`joulebench.meters.gpus`). ``measure_period``: probe the
    update period at open (else 100 ms is assumed). ``background``: poll power on a thread at
    ``poll_hz``; ``False`` samples only at reads (for callers that read ≥ 10 Hz, and tests).
    ``clock`` and ``sleep`` drive the probe and the integration (inject them in tests).
    """

    description = "NVIDIA NVML: total-energy counter (Volta+) or polled power"

    def __init__(
        self,
        *,
        mode: str = "auto",
        poll_hz: float = 20.0,
        gpus: str | Sequence[str | int] | None = None,
        cuda_visible_devices: str | None = None,
        measure_period: bool = True,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
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
        self._sleep = sleep
        self._poll_period_s = 1.0 / poll_hz
        self._background = background
        self._gpu_list = parse_gpu_list(gpus)
        nvml_init(self._pynvml)
        try:
            self._open(mode, cuda_visible_devices)
            self._period = self._probe_period() if measure_period else None
        except BaseException:
            self._pynvml.nvmlShutdown()
            raise
        self._start_polling()

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
        entries = [*(env or "").split(","), *(self._gpu_list or [])]
        ordinals = any(e.strip().isdigit() for e in (env or "").split(","))
        pci_order = os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
        if ordinals and cuda_uuids is None and not pci_order and len(set(names)) > 1:
            log.warning(
                "CUDA_VISIBLE_DEVICES uses ordinals on a machine with different GPU models; "
                "assuming PCI bus order. Set CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs."
            )
        mig = _mig_parents(nv, handles) if any("MIG-" in e.upper() for e in entries) else {}
        chosen, self.selection = select_gpus(
            uuids,
            names,
            gpus=self._gpu_list,
            cuda_visible=env,
            mig_parents=mig,
            cuda_uuids=cuda_uuids,
        )
        if not chosen:
            raise MeterUnavailable(
                f"no GPU is visible (CUDA_VISIBLE_DEVICES={env!r}, NVML sees {count}): "
                "fix CUDA_VISIBLE_DEVICES or pick another --meter"
            )
        self.opened: list[GpuDevice] = []
        self._handles_all: dict[str, Any] = {}
        for s in chosen:
            dev = GpuDevice(
                f"gpu:{s.cuda_index}", s.nvml_index, uuids[s.nvml_index], names[s.nvml_index],
                s.mig_uuid, s.cuda_index,
            )  # fmt: skip
            self.opened.append(dev)
            self._handles_all[dev.domain] = handles[s.nvml_index]
            if s.mig_uuid:
                warnings.warn(
                    f"{s.mig_uuid} is a MIG instance: NVML measures its whole parent GPU "
                    f"{dev.uuid}, including other instances' work",
                    JoulebenchWarning,
                    stacklevel=3,
                )
        self.devices = list(self.opened)
        self._methods_all: dict[str, Method] = {}
        self._counters: dict[str, CounterAccumulator] = {}
        for dev in self.opened:
            handle = self._handles_all[dev.domain]
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
                    self._methods_all[dev.domain] = Method.COUNTER
                    continue
            instant = _instant_power_mw(nv, handle) is not None
            self._methods_all[dev.domain] = Method.POLLED_INSTANT if instant else Method.POLLED
        self._polled = [d for d, m in self._methods_all.items() if m is not Method.COUNTER]
        self._lock = threading.Lock()
        self._poll_energy_j = dict.fromkeys(self._polled, 0.0)
        self._last_sample: dict[str, tuple[float, float]] = {}
        self._poller: Periodic | None = None
        self._warned_all = False

    # -- update period --------------------------------------------------------------------------
    def _raw_values(self) -> list[float]:
        """Raw counter (mJ) or power (mW) of every opened GPU, for the update-period probe."""
        return [
            float(self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handles_all[d]))
            if d in self._counters
            else self._power_mw(d)
            for d in self._methods_all
        ]

    def _probe_period(self) -> dict[str, object]:
        try:
            found = measure_update_period(self._raw_values, clock=self._clock, sleep=self._sleep)
        except self._error as exc:
            raise MeterUnavailable(f"NVML reading failed while probing: {exc}") from exc
        info: dict[str, object] = {
            "per_domain_s": dict(zip(self._methods_all, found.periods_s, strict=True)),
            "probe_s": found.elapsed_s,
            "poll_s": found.poll_s,
        }
        if found.period_s is None:
            log.warning(
                "no NVML reading changed within %.1f s: assuming a %.0f ms update period",
                found.elapsed_s,
                ASSUMED_UPDATE_PERIOD_S * 1e3,
            )
        self._period_s = found.period_s or ASSUMED_UPDATE_PERIOD_S
        info["period_s"] = self._period_s
        info["source"] = "measured" if found.period_s is not None else "assumed"
        return info

    # -- polling --------------------------------------------------------------------------------
    def _start_polling(self) -> None:
        if self._polled:
            self._sample_power()
        if self._polled and self._background:
            self._poller = Periodic(self._sample_power, self._poll_period_s, name="joulebench-nvml")
            self._poller.start()

    def _power_mw(self, domain: str) -> float:
        handle = self._handles_all[domain]
        if self._methods_all[domain] is Method.POLLED_INSTANT:
            value = _instant_power_mw(self._pynvml, handle)
            if value is not None:
                return value
            log.debug("%s: instantaneous power unavailable for one sample", domain)
        return float(self._pynvml.nvmlDeviceGetPowerUsage(handle))

    def _sample_power(self) -> None:
        with self._lock:
            for domain in self._polled:
                try:
                    power_w = self._power_mw(domain) / 1000.0
                except self._error as exc:
                    raise MeterUnavailable(f"NVML power reading failed on {domain}: {exc}") from exc
                now = self._clock()
                last = self._last_sample.get(domain)
                if last is not None and now > last[0]:
                    self._poll_energy_j[domain] += (now - last[0]) * (power_w + last[1]) / 2
                self._last_sample[domain] = (now, power_w)

    # -- which GPUs -----------------------------------------------------------------------------
    def focus(self, cuda_indices: Sequence[int]) -> None:
        """Measure only the opened GPUs the workload uses (``cuda:K`` for K in ``cuda_indices``).

        An explicit ``--gpus`` choice is kept as given. GPUs outside the opened set are not
        added: :func:`joulebench.meters.gpus.require_gpu_domain` reports them missing.
        """
        wanted = set(cuda_indices)
        if self.selection == GpuSelection.GPUS:
            extra = [d.domain for d in self.opened if d.cuda_index not in wanted]
            if extra:
                log.info("--gpus also measures %s, which the workload does not use", extra)
            return
        keep = [d for d in self.opened if d.cuda_index in wanted]
        if not keep:
            return
        with self._lock:
            self.devices = keep
        if len(keep) < len(self.opened):
            self.selection = GpuSelection.MODEL
            log.info("nvml: measuring the model's GPUs %s", [d.domain for d in keep])

    # -- Meter protocol -------------------------------------------------------------------------
    @property
    def domains(self) -> Mapping[str, Method]:
        return {d.domain: self._methods_all[d.domain] for d in self.devices}

    @property
    def update_period_s(self) -> float:
        """The measured (or, failing that, assumed) update period; at least the poll period when
        power is polled."""
        period = self._period_s if self._period else ASSUMED_UPDATE_PERIOD_S
        return max(period, self._poll_period_s if self._polled else 0.0)

    @property
    def handles(self) -> dict[str, Any]:
        """NVML handle per measured domain (for the isolation check)."""
        return {d.domain: self._handles_all[d.domain] for d in self.devices}

    @property
    def pynvml(self) -> ModuleType:
        return self._pynvml

    def read(self) -> Reading:
        if not self._warned_all and self.selection == GpuSelection.ALL and len(self.devices) > 1:
            self._warned_all = True
            log.warning(
                "nvml measures all %d GPUs of this node (%s): nothing chose them. Pass --gpus, "
                "set CUDA_VISIBLE_DEVICES, or run the model on them",
                len(self.devices),
                ", ".join(f"{d.nvml_index}: {d.name}" for d in self.devices),
            )
        if self._polled:
            self._sample_power()
        energy: dict[str, float] = {}
        with self._lock:  # the timeline thread and window edges read concurrently
            now = self._clock()
            measured = [d.domain for d in self.devices]
            for domain in measured:
                acc = self._counters.get(domain)
                if acc is None:
                    energy[domain] = self._poll_energy_j[domain]
                    continue
                try:
                    raw_mj = self._pynvml.nvmlDeviceGetTotalEnergyConsumption(
                        self._handles_all[domain]
                    )
                except self._error as exc:
                    raise MeterUnavailable(
                        f"NVML energy reading failed on {domain}: {exc}"
                    ) from exc
                energy[domain] = acc.update(float(raw_mj)) / 1000.0  # mJ → J, once
        return Reading(now, energy)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop(timeout_s=2.0)
            self._poller = None
        with contextlib.suppress(self._error):
            self._pynvml.nvmlShutdown()

    def parameters(self) -> dict[str, object]:
        out: dict[str, object] = {
            "devices": {d.domain: d.to_dict() for d in self.devices},
            "gpu_selection": self.selection.value,
            "gpus": self._gpu_list,
            "cuda_visible_devices": self._cuda_visible,
            "update_period": dict(self._period) if self._period else {"source": "not probed"},
            "poll_hz": 1.0 / self._poll_period_s,
        }
        if len(self.devices) < len(self.opened):
            out["opened_devices"] = {d.domain: d.to_dict() for d in self.opened}
        return out
