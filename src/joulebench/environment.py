"""What machine and software produced a result: stored with every run, shown by ``joulebench env``.

Library versions come from package metadata (nothing heavy is imported). GPUs come from NVML
when it works. Every meter backend's availability is included with its reason and hint.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from importlib import metadata
from typing import Any

from joulebench._version import __version__

log = logging.getLogger(__name__)

LIBRARIES = (
    "torch",
    "transformers",
    "accelerate",
    "tokenizers",
    "datasets",
    "bitsandbytes",
    "torchao",
    "codecarbon",
    "nvidia-ml-py",
    "vllm",
    "fastapi",
    "uvicorn",
    "httpx",
    "duckdb",
    "numpy",
    "pydantic",
    "psutil",
    "ray",
)


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` when absent."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu() -> dict[str, Any]:
    import psutil

    from joulebench.meters.estimate import cpu_model

    return {
        "model": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "architecture": platform.machine(),
    }


def _gpus() -> dict[str, Any]:
    from joulebench.errors import JoulebenchError
    from joulebench.meters.nvml import list_gpus

    try:
        return {"devices": list_gpus(), "source": "nvml"}
    except JoulebenchError as exc:
        return {"devices": [], "source": None, "note": str(exc)}
    except Exception as exc:  # environment collection must never fail a run
        return {"devices": [], "source": None, "note": f"{exc.__class__.__name__}: {exc}"}


def collect_environment(**meter_options: Any) -> dict[str, Any]:
    """OS, CPU, RAM, GPUs, library versions and every meter backend's availability."""
    import psutil

    from joulebench.meters.registry import probe_all

    meters = {
        name: {"available": a.available, "reason": a.reason, "hint": a.hint}
        for name, a in probe_all(**meter_options).items()
    }
    return {
        "joulebench": __version__,
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version(),
            "platform": platform.platform(),
        },
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "cpu": _cpu(),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 2),
        "gpus": _gpus(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "libraries": library_versions(),
        "meters": meters,
    }
