"""Roofline: FLOPs and bytes per phase from a model config, and hardware peaks → time floor.

Counts are for a dense decoder-only transformer (Llama/Qwen/Mistral family): per layer the
Q/K/V/O projections and a gated MLP (3 matrices), attention score and value products over the
visible context, logits for the last position only (as ``generate`` computes them). Bytes are
weights read once per forward plus the KV cache written (prefill) or read (decode); activations
are ignored, so the floor is a lower bound. time floor = max(FLOPs / peak, bytes / bandwidth);
efficiency = floor / measured.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulebench.errors import ConfigError
from joulebench.results.cell import Roofline, RooflinePhase
from joulebench.workloads.precision import BITS, PrecisionSpec, parse_precision, short_dtype

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The numbers the roofline needs from a model config."""

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    # the KV cache's dtype: the model's own (config ``dtype``), which a quantized model keeps
    # for its activations and cache whatever its weights are (None: not in the config)
    kv_dtype: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        def get(key: str) -> Any:
            if isinstance(config, Mapping):
                return config.get(key)
            return getattr(config, key, None)

        missing = [
            k
            for k in (
                "num_hidden_layers",
                "hidden_size",
                "num_attention_heads",
                "intermediate_size",
                "vocab_size",
            )
            if get(k) is None
        ]
        if missing:
            raise ConfigError(
                f"model config lacks {', '.join(missing)}: no roofline for this architecture"
            )
        heads = int(get("num_attention_heads"))
        hidden = int(get("hidden_size"))
        return cls(
            n_layers=int(get("num_hidden_layers")),
            hidden=hidden,
            n_heads=heads,
            n_kv_heads=int(get("num_key_value_heads") or heads),
            head_dim=int(get("head_dim") or hidden // heads),
            intermediate=int(get("intermediate_size")),
            vocab=int(get("vocab_size")),
            kv_dtype=short_dtype(get("dtype") or get("torch_dtype")),
        )

    @property
    def layer_params(self) -> int:
        q = self.n_heads * self.head_dim
        kv = self.n_kv_heads * self.head_dim
        return self.hidden * (2 * q + 2 * kv) + 3 * self.hidden * self.intermediate

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def kv_per_token(self) -> int:
        """K and V elements per token, all layers."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim


@dataclass(frozen=True, slots=True)
class PhaseWork:
    flops: float
    bytes: float

    def __add__(self, other: PhaseWork) -> PhaseWork:
        return PhaseWork(self.flops + other.flops, self.bytes + other.bytes)


def prefill_work(
    shape: ModelShape, batch: int, length: int, weight_bytes: float, act_bytes: float
) -> PhaseWork:
    """One forward over ``batch`` left-padded prompts of ``length`` tokens (pads computed)."""
    tokens = batch * length
    attn = 4.0 * shape.n_layers * shape.n_heads * shape.head_dim * batch * length * (length + 1) / 2
    flops = (
        2.0 * shape.n_layers * shape.layer_params * tokens + 2.0 * shape.head_params * batch + attn
    )
    weights = (shape.n_layers * shape.layer_params + shape.head_params) * weight_bytes
    kv_write = shape.kv_per_token * tokens * act_bytes
    return PhaseWork(flops, weights + kv_write)


def decode_work(
    shape: ModelShape, batch: int, context: int, steps: int, weight_bytes: float, act_bytes: float
) -> PhaseWork:
    """``steps`` one-token steps for ``batch`` sequences starting at ``context`` cached tokens."""
    total = PhaseWork(0.0, 0.0)
    weights = (shape.n_layers * shape.layer_params + shape.head_params) * weight_bytes
    dense = 2.0 * (shape.n_layers * shape.layer_params + shape.head_params) * batch
    for s in range(steps):
        ctx = context + s + 1
        attn = 4.0 * shape.n_layers * shape.n_heads * shape.head_dim * batch * ctx
        kv_read = shape.kv_per_token * batch * ctx * act_bytes
        total = total + PhaseWork(dense + attn, weights + kv_read)
    return total


# --------------------------------------------------------------------------------------------
# Hardware peaks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HardwarePeak:
    """Peak dense throughput per compute dtype (FLOP/s) and memory bandwidth (bytes/s)."""

    name: str
    flops_per_s: Mapping[str, float]
    bandwidth_bytes_s: float
    source: str

    def peak_for(self, compute: str) -> float:
        if compute in self.flops_per_s:
            return self.flops_per_s[compute]
        return self.flops_per_s["fp32"]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "tflops": {k: v / 1e12 for k, v in self.flops_per_s.items()},
            "bandwidth_gb_s": self.bandwidth_bytes_s / 1e9,
            "source": self.source,
        }


def _gpu(
    name: str,
    fp32: float,
    tf32: float,
    bf16: float,
    int8: float,
    bw_gb_s: float,
    source: str,
    fp8: float | None = None,
) -> HardwarePeak:
    t = 1e12
    peaks = {
        "fp32": fp32 * t,
        "tf32": tf32 * t,
        "bf16": bf16 * t,
        "fp16": bf16 * t,
        "int8": int8 * t,
    }
    if fp8:
        peaks["fp8"] = fp8 * t
    return HardwarePeak(
        name,
        peaks,
        bw_gb_s * 1e9,
        source,
    )


# Dense (no 2:4 sparsity) peaks in TFLOP/s / TOPS; fp32 is the non-tensor-core rate (PyTorch's
# default, TF32 off for matmuls). Sources: NVIDIA datasheets as cited.
GPU_TABLE: dict[str, HardwarePeak] = {
    "H100 SXM": _gpu(
        "H100 SXM",
        67,
        494.5,
        989.5,
        1979,
        3350,
        "NVIDIA H100 Tensor Core GPU datasheet (SXM5)",
        fp8=1979,
    ),
    "H100 PCIe": _gpu(
        "H100 PCIe",
        51,
        378,
        756,
        1513,
        2000,
        "NVIDIA H100 Tensor Core GPU datasheet (PCIe)",
        fp8=1513,
    ),
    "H200": _gpu(
        "H200",
        67,
        494.5,
        989.5,
        1979,
        4800,
        "NVIDIA H200 Tensor Core GPU datasheet (SXM)",
        fp8=1979,
    ),
    "H100 NVL": _gpu(
        "H100 NVL",
        60,
        417.5,
        835.5,
        1670.5,
        3900,
        "NVIDIA H100 Tensor Core GPU datasheet (H100 NVL, per GPU; sparse figures halved)",
        fp8=1670.5,
    ),
    "H200 NVL": _gpu(
        "H200 NVL",
        60,
        417.5,
        835.5,
        1670.5,
        4800,
        "NVIDIA H200 Tensor Core GPU datasheet (H200 NVL; sparse figures halved)",
        fp8=1670.5,
    ),
    "A100 SXM 40GB": _gpu(
        "A100 SXM 40GB", 19.5, 156, 312, 624, 1555, "NVIDIA A100 datasheet (40GB SXM)"
    ),
    "A100 SXM 80GB": _gpu(
        "A100 SXM 80GB", 19.5, 156, 312, 624, 2039, "NVIDIA A100 datasheet (80GB SXM)"
    ),
    "A100 PCIe 40GB": _gpu(
        "A100 PCIe 40GB", 19.5, 156, 312, 624, 1555, "NVIDIA A100 datasheet (40GB PCIe)"
    ),
    "A100 PCIe 80GB": _gpu(
        "A100 PCIe 80GB", 19.5, 156, 312, 624, 1935, "NVIDIA A100 datasheet (80GB PCIe)"
    ),
    "L40": _gpu(
        "L40", 90.5, 90.5, 181, 362, 864, "NVIDIA L40 datasheet (sparse figures halved)", fp8=362
    ),
    "L4": _gpu(
        "L4", 30.3, 60, 121, 242.5, 300, "NVIDIA L4 datasheet (sparse figures halved)", fp8=242.5
    ),
    "L40S": _gpu(
        "L40S", 91.6, 183, 362, 733, 864, "NVIDIA L40S datasheet (sparse figures halved)", fp8=733
    ),
    "A10G": _gpu(
        "A10G",
        31.2,
        35,
        70,
        140,
        600,
        "AWS EC2 G5 documentation and public A10G specs (NVIDIA publishes no A10G datasheet; approximate)",
    ),
    "RTX 4090": _gpu(
        "RTX 4090",
        82.6,
        82.6,
        165.2,
        660.6,
        1008,
        "NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090, FP32 accumulate)",
        fp8=330.3,
    ),
}

#: Product names as NVML / ``torch.cuda.get_device_name`` give them, as whole words: each entry
#: (pattern, table key, memory in GB or None). ``L4`` must not match an L40, an H100 NVL or
#: PCIe must not borrow the SXM figures, and an A100 is told apart by its memory where its name
#: does not say it. A device that matches nothing has no roofline (and says so).
_GPU_MATCH: tuple[tuple[str, str, int | None], ...] = (
    (r"\bH200 NVL\b", "H200 NVL", None),
    (r"\bH200\b(?!.*\bNVL\b)", "H200", None),
    (r"\bH100 NVL\b", "H100 NVL", None),
    (r"\bH100\b.*\bPCIE\b", "H100 PCIe", None),
    (r"\bH100\b.*\b(SXM5?|HBM3)\b", "H100 SXM", None),
    (r"\bA100\b.*\bPCIE\b.*\b40GB\b|\bA100\b.*\b40GB\b.*\bPCIE\b", "A100 PCIe 40GB", None),
    (r"\bA100\b.*\bPCIE\b.*\b80GB\b|\bA100\b.*\b80GB\b.*\bPCIE\b", "A100 PCIe 80GB", None),
    (r"\bA100\b.*\bSXM4?\b.*\b40GB\b", "A100 SXM 40GB", None),
    (r"\bA100\b.*\bSXM4?\b.*\b80GB\b", "A100 SXM 80GB", None),
    (r"\bA100\b.*\bPCIE\b", "A100 PCIe 40GB", 40),
    (r"\bA100\b.*\bPCIE\b", "A100 PCIe 80GB", 80),
    (r"\bL40S\b", "L40S", None),
    (r"\bL40\b", "L40", None),
    (r"\bL4\b", "L4", None),
    (r"\bA10G\b", "A10G", None),
    (r"\bRTX 4090\b", "RTX 4090", None),
)


def gpu_peak(device_name: str, memory_gb: float | None = None) -> HardwarePeak | None:
    """Table entry for a CUDA device name (``torch.cuda.get_device_name``), or None if unknown.

    ``memory_gb``: the device's total memory, which tells apart products whose name does not
    (an ``A100-PCIE`` of 40 or 80 GB). Matching is by whole product words: an unknown or
    ambiguous device gets no peaks rather than a neighbour's.
    """
    upper = " ".join(device_name.upper().replace("-", " ").replace("_", " ").split())
    for pattern, key, memory in _GPU_MATCH:
        if not re.search(pattern, upper):
            continue
        if memory is not None and (memory_gb is None or abs(memory_gb - memory) > memory * 0.2):
            continue
        return GPU_TABLE[key]
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "joulebench" / "cpu_peak.json"


def calibrate_cpu(
    *, budget_s: float = 0.3, cache: Path | None = None, refresh: bool = False
) -> HardwarePeak:
    """Measure CPU matmul GFLOP/s (fp32, bf16) and copy GB/s with torch; cached per CPU/threads.

    Small tensors (512² mm and linear, 64 MiB and 256 KiB copies), about ``budget_s`` per figure,
    each figure the best of its kernels and of single calls. A measured peak is what this process
    can reach, so efficiency against it is conservative (close to 1 is possible).
    """
    import torch

    cache = cache or _cache_path()
    key = f"v5|{_cpu_model()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    if not refresh and cache.exists():
        try:
            stored = json.loads(cache.read_text()).get(key)
        except (OSError, ValueError):
            stored = None
        if stored:
            return HardwarePeak(
                stored["name"], stored["flops_per_s"], stored["bandwidth_bytes_s"], stored["source"]
            )

    def rate(fn: Any, work: float) -> float:
        # The best single call, not the mean: on a shared machine other processes steal time
        # slices, and a mean would understate the peak (a floor above the measured time).
        fn()  # warm-up
        best, start = 0.0, time.perf_counter()
        while True:
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            best = max(best, work / max(t1 - t0, 1e-9))
            if t1 - start >= budget_s:
                return best

    flops: dict[str, float] = {}
    size = 512
    # the best of torch.mm and F.linear (what a model's layers call): on CPUs without bf16
    # units, bf16 mm takes a slow generic path (1.2 GFLOP/s here) while linear goes through
    # oneDNN (19 GFLOP/s), and an mm-only "peak" put bf16 floors 4x above measured times
    linear = torch.nn.functional.linear
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        flops[label] = max(
            rate(lambda a=a, b=b: torch.mm(a, b), 2.0 * size**3),
            rate(lambda a=a, b=b: linear(a, b), 2.0 * size**3),
        )
    flops["fp16"] = flops["bf16"]
    # The peak bandwidth is the best over a DRAM-sized (64 MiB) and a cache-sized (256 KiB) copy:
    # a small model's weights stay in cache, and a DRAM-only figure made its memory "floor"
    # longer than the measured time (roofline efficiency > 1, an impossible number).
    bandwidth = 0.0
    for n_bytes in (64 * 2**20, 256 * 2**10):
        src = torch.empty(n_bytes // 4, dtype=torch.float32)
        dst = torch.empty_like(src)
        bandwidth = max(bandwidth, rate(lambda s=src, d=dst: d.copy_(s), 2.0 * src.numel() * 4))
    peak = HardwarePeak(
        f"CPU {_cpu_model()} ({torch.get_num_threads()} threads)",
        flops,
        bandwidth,
        "measured by joulebench calibration (best of torch.mm and F.linear 512², best of 64 MiB and "
        "256 KiB copies)",
    )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(cache.read_text()) if cache.exists() else {}
        data[key] = {
            "name": peak.name,
            "flops_per_s": flops,
            "bandwidth_bytes_s": bandwidth,
            "source": peak.source,
        }
        cache.write_text(json.dumps(data, indent=1))
    except (OSError, ValueError) as exc:
        log.debug("cannot cache the CPU calibration at %s: %s", cache, exc)
    return peak


def given_peak(gflops: float, bandwidth_gb_s: float, name: str = "CPU (given)") -> HardwarePeak:
    if gflops <= 0 or bandwidth_gb_s <= 0:
        raise ConfigError("--cpu-peak-gflops and --cpu-bandwidth-gbs must both be > 0")
    f = gflops * 1e9
    return HardwarePeak(
        name, {"fp32": f, "bf16": f, "fp16": f}, bandwidth_gb_s * 1e9, "given by the user"
    )


@dataclass(frozen=True, slots=True)
class BatchShape:
    """One static batch: ``batch`` sequences padded to ``length``, decoded for ``steps`` steps."""

    batch: int
    length: int
    steps: int


def roofline(
    shape: ModelShape,
    batches: Sequence[BatchShape],
    precision: PrecisionSpec | str,
    hardware: HardwarePeak,
    *,
    measured_s: Mapping[str, float | None] | None = None,
) -> Roofline:
    """Per-phase FLOPs, bytes, time floor and (given measured seconds) efficiency.

    ``precision``: the parsed precision, or a name :func:`parse_precision` knows. Its weight
    format gives the bytes per parameter and its :attr:`~PrecisionSpec.peak_dtype` the peak.
    Pass the parsed spec to keep its knobs (a bare name cannot carry a compute dtype).
    """
    spec = parse_precision(precision)
    wbytes = spec.weight_bits / 8
    cdt = spec.peak_dtype
    # the KV cache is written and read in the model's dtype, not the matmul compute dtype (an
    # int8-bnb model computes in fp16 but keeps an fp32 cache when loaded in fp32)
    kv_dtype = shape.kv_dtype or ("fp32" if cdt in ("fp32", "tf32") else "bf16")
    act = BITS[kv_dtype] / 8
    peak = hardware.peak_for(cdt)
    work = {"prefill": PhaseWork(0.0, 0.0), "decode": PhaseWork(0.0, 0.0)}
    for b in batches:
        work["prefill"] = work["prefill"] + prefill_work(shape, b.batch, b.length, wbytes, act)
        work["decode"] = work["decode"] + decode_work(
            shape, b.batch, b.length, b.steps, wbytes, act
        )
    out: Roofline = {
        "hardware": hardware.to_dict(),
        "precision": spec.weight_kind,
        "compute_dtype": cdt,
        "kv_dtype": kv_dtype,
        "kv_dtype_source": "model config" if shape.kv_dtype else "compute dtype (config has none)",
        "peak_flops_per_s": peak,
        "bandwidth_bytes_s": hardware.bandwidth_bytes_s,
    }
    measured = measured_s or {}
    out["prefill"] = _phase_roof(work["prefill"], peak, hardware, measured.get("prefill"))
    out["decode"] = _phase_roof(work["decode"], peak, hardware, measured.get("decode"))
    return out


def _phase_roof(
    w: PhaseWork, peak: float, hardware: HardwarePeak, measured: float | None
) -> RooflinePhase:
    """One phase's work against the peaks: its bound, time floor and (measured) efficiency."""
    compute_s = w.flops / peak
    memory_s = w.bytes / hardware.bandwidth_bytes_s
    floor = max(compute_s, memory_s)
    return {
        "flops": w.flops,
        "bytes": w.bytes,
        "arithmetic_intensity": w.flops / w.bytes if w.bytes else None,
        "bound": "compute" if compute_s >= memory_s else "memory",
        "time_floor_s": floor,
        "measured_s": measured,
        # a non-positive time (a subtraction lost in noise) has no efficiency
        "efficiency": floor / measured if measured is not None and measured > 0 else None,
    }
