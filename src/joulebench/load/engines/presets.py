"""Engine presets: the usual command line of each engine, built from a model, host, port and GPUs.

Flags per engine (from each project's documentation of its server CLI; ``docs/engines.md`` has
the full commands):

============ ================================================ ======================== ===========
engine       command                                          host / port              tensor par.
============ ================================================ ======================== ===========
vllm         ``vllm serve MODEL``                             ``--host`` ``--port``    ``--tensor-parallel-size N``
tgi          ``text-generation-launcher --model-id MODEL``    ``--hostname`` ``--port`` ``--num-shard N``
sglang       ``python -m sglang.launch_server --model-path``  ``--host`` ``--port``    ``--tp-size N``
trtllm       ``trtllm-serve MODEL``                           ``--host`` ``--port``    ``--tp_size N``
llamacpp     ``llama-server -m MODEL.gguf``                   ``--host`` ``--port``    none (one process; ``-ngl`` offloads layers)
transformers ``transformers serve MODEL``                     ``--host`` ``--port``    none
joulebench   ``joulebench serve --model MODEL``               ``--host`` ``--port``    none
============ ================================================ ======================== ===========

Tensor parallelism is the number of GPUs given with ``--gpus`` (the engine sees exactly those
through ``CUDA_VISIBLE_DEVICES``, and the meter measures exactly those). Engines that expose their
batch as Prometheus metrics get the flag that turns them on (SGLang ``--enable-metrics``,
llama.cpp ``--metrics``). ``--engine-args`` appends anything else verbatim.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from joulebench.errors import ConfigError, UnknownName


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What a preset needs to know: model, where to listen, how many GPUs, which device."""

    model: str
    host: str
    port: int
    n_gpus: int = 0  # 0: CPU (engines that can run there), else the tensor-parallel size
    meter: str | None = None  # joulebench serve measures itself with the same kind of meter
    fake_power_w: float | None = None

    @property
    def tp(self) -> int:
        return max(self.n_gpus, 1)


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    build: Callable[[LaunchSpec], list[str]]
    ready_paths: tuple[str, ...]
    metrics_path: str | None  # Prometheus text (or trtllm's JSON iteration stats)
    version_paths: tuple[str, ...]
    protocol: str  # the load protocol that reads its energy and outcomes best
    energy: str | None = None  # how it reports energy itself, when it does
    docs: str = ""


def _exe(name: str) -> str:
    """``name`` next to this Python when it is installed there (a venv), else as found on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name) or name


def _vllm(s: LaunchSpec) -> list[str]:
    cmd = ["vllm", "serve", s.model, "--host", s.host, "--port", str(s.port)]
    return cmd + (["--tensor-parallel-size", str(s.tp)] if s.tp > 1 else [])


def _tgi(s: LaunchSpec) -> list[str]:
    cmd = ["text-generation-launcher", "--model-id", s.model]
    cmd += ["--hostname", s.host, "--port", str(s.port)]
    return cmd + (["--num-shard", str(s.tp)] if s.tp > 1 else [])


def _sglang(s: LaunchSpec) -> list[str]:
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", s.model]
    cmd += ["--host", s.host, "--port", str(s.port), "--enable-metrics"]
    return cmd + (["--tp-size", str(s.tp)] if s.tp > 1 else [])


def _trtllm(s: LaunchSpec) -> list[str]:
    cmd = ["trtllm-serve", s.model, "--host", s.host, "--port", str(s.port)]
    return cmd + (["--tp_size", str(s.tp)] if s.tp > 1 else [])


def _llamacpp(s: LaunchSpec) -> list[str]:
    cmd = ["llama-server", "-m", s.model, "--host", s.host, "--port", str(s.port), "--metrics"]
    return cmd + (["-ngl", "999"] if s.n_gpus else [])


def _transformers(s: LaunchSpec) -> list[str]:
    cmd = [_exe("transformers"), "serve", s.model, "--host", s.host, "--port", str(s.port)]
    return [*cmd, "--device", "cuda" if s.n_gpus else "cpu"]


def _joulebench(s: LaunchSpec) -> list[str]:
    cmd = [sys.executable, "-m", "joulebench", "serve", "--model", s.model]
    cmd += ["--host", s.host, "--port", str(s.port), "--device", "cuda" if s.n_gpus else "cpu"]
    cmd += ["--idle-s", "0"]  # the load measures the idle baseline itself, model loaded
    if s.meter:
        cmd += ["--meter", s.meter]
        if s.meter == "fake" and s.fake_power_w is not None:
            cmd += ["--fake-power-w", f"{s.fake_power_w:g}"]
    return cmd


def _single_gpu(name: str) -> Callable[[LaunchSpec], list[str]]:
    """``build`` for engines without tensor parallelism: more than one GPU is refused."""
    build = {"llamacpp": _llamacpp, "transformers": _transformers, "joulebench": _joulebench}[name]

    def checked(s: LaunchSpec) -> list[str]:
        if s.n_gpus > 1:
            raise ConfigError(
                f"--engine {name} has no tensor parallelism: give it one GPU (--gpus), "
                f"not {s.n_gpus}"
            )
        return build(s)

    return checked


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("vllm", _vllm, ("/health",), "/metrics", ("/version",), "openai-chat"),
        Preset(
            "tgi", _tgi, ("/health",), "/metrics", ("/info",), "tgi", energy="details.energy_mj"
        ),
        Preset("sglang", _sglang, ("/health",), "/metrics", ("/get_server_info",), "openai-chat"),
        Preset(
            "trtllm",
            _trtllm,
            ("/health",),
            "/metrics",
            ("/version",),
            "openai-chat",
            energy="/energy_metrics",
        ),
        Preset(
            "llamacpp",
            _single_gpu("llamacpp"),
            ("/health",),
            "/metrics",
            ("/props",),
            "openai-chat",
        ),
        Preset("transformers", _single_gpu("transformers"), ("/health",), None, (), "openai-chat"),
        Preset(
            "joulebench",
            _single_gpu("joulebench"),
            ("/health",),
            "/metrics",
            ("/info",),
            "openai-chat",
            energy="x-energy-j",
        ),
    )
}


def preset(name: str) -> Preset:
    found = PRESETS.get(name)
    if found is None:
        raise UnknownName("engine", name, list(PRESETS))
    return found


def engine_command(name: str, spec: LaunchSpec, extra_args: str | None = None) -> list[str]:
    """The preset's command line for ``spec``, ``extra_args`` (shell-like words) appended."""
    if not spec.model:
        raise ConfigError(f"--engine {name} needs --model (what the engine serves)")
    return preset(name).build(spec) + (shlex.split(extra_args) if extra_args else [])
