"""Engine presets: each engine's usual command line, GPUs given to the engine, launch plans."""

from __future__ import annotations

import sys

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.load.engines.presets import PRESETS, LaunchSpec, engine_command
from joulebench.load.engines.session import LaunchOptions, gpu_env, plan


def _after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize(
    ("engine", "host_flag", "tp_flag"),
    [
        ("vllm", "--host", "--tensor-parallel-size"),
        ("tgi", "--hostname", "--num-shard"),
        ("sglang", "--host", "--tp-size"),
        ("trtllm", "--host", "--tp_size"),
    ],
)
def test_tensor_parallel_engines_get_host_port_and_tp(engine, host_flag, tp_flag) -> None:
    cmd = engine_command(engine, LaunchSpec("org/model", "0.0.0.0", 8123, n_gpus=4))
    assert "org/model" in cmd
    assert _after(cmd, host_flag) == "0.0.0.0"
    assert _after(cmd, "--port") == "8123"
    assert _after(cmd, tp_flag) == "4"
    one = engine_command(engine, LaunchSpec("org/model", "127.0.0.1", 8000, n_gpus=1))
    assert tp_flag not in one  # one GPU: the engine's default, no flag


def test_exact_command_lines() -> None:
    spec = LaunchSpec("meta-llama/Llama-3.1-8B-Instruct", "127.0.0.1", 8000, n_gpus=4)
    assert engine_command("vllm", spec) == [
        "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--host", "127.0.0.1",
        "--port", "8000", "--tensor-parallel-size", "4",
    ]  # fmt: skip
    assert engine_command("tgi", spec) == [
        "text-generation-launcher", "--model-id", "meta-llama/Llama-3.1-8B-Instruct",
        "--hostname", "127.0.0.1", "--port", "8000", "--num-shard", "4",
    ]  # fmt: skip
    sglang = engine_command("sglang", spec)
    assert sglang[:3] == [sys.executable, "-m", "sglang.launch_server"]
    assert "--enable-metrics" in sglang  # its Prometheus gauges are off by default
    llama = engine_command("llamacpp", LaunchSpec("m.gguf", "127.0.0.1", 8080, n_gpus=1))
    assert llama[:3] == ["llama-server", "-m", "m.gguf"] and "--metrics" in llama
    assert _after(llama, "-ngl") == "999"


def test_single_process_engines_refuse_several_gpus() -> None:
    for engine in ("llamacpp", "transformers", "joulebench"):
        with pytest.raises(ConfigError, match="no tensor parallelism"):
            engine_command(engine, LaunchSpec("m", "127.0.0.1", 8000, n_gpus=2))


def test_joulebench_preset_runs_the_same_kind_of_meter_on_cpu() -> None:
    cmd = engine_command(
        "joulebench", LaunchSpec("tiny", "127.0.0.1", 9000, meter="fake", fake_power_w=40.0)
    )
    assert cmd[:4] == [sys.executable, "-m", "joulebench", "serve"]
    assert _after(cmd, "--device") == "cpu" and _after(cmd, "--meter") == "fake"
    assert _after(cmd, "--fake-power-w") == "40"
    transformers = engine_command("transformers", LaunchSpec("/m", "127.0.0.1", 9000, n_gpus=1))
    assert transformers[1:3] == ["serve", "/m"] and _after(transformers, "--device") == "cuda"


def test_extra_args_unknown_engine_and_missing_model() -> None:
    cmd = engine_command(
        "vllm", LaunchSpec("m", "127.0.0.1", 1, 1), "--max-model-len 4096 --enforce-eager"
    )
    assert cmd[-3:] == ["--max-model-len", "4096", "--enforce-eager"]
    with pytest.raises(UnknownName, match="known: joulebench, llamacpp"):
        engine_command("ollama", LaunchSpec("m", "127.0.0.1", 1))
    with pytest.raises(ConfigError, match="needs --model"):
        engine_command("vllm", LaunchSpec("", "127.0.0.1", 1))
    assert set(PRESETS) == {"vllm", "tgi", "sglang", "trtllm", "llamacpp", "transformers",
                            "joulebench"}  # fmt: skip


def test_gpus_reach_the_engine_in_nvidia_smi_order() -> None:
    assert gpu_env(None) == {}
    assert gpu_env("3, 5") == {"CUDA_VISIBLE_DEVICES": "3,5", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert gpu_env("GPU-ab12")["CUDA_VISIBLE_DEVICES"] == "GPU-ab12"


def test_plan_from_preset_url_and_gpus(tmp_path) -> None:
    p = plan(
        LaunchOptions(engine="vllm"),
        url="http://127.0.0.1:8011/",
        model="m",
        gpus="0,1,2,3",
        log_dir=tmp_path,
    )
    assert p.url == "http://127.0.0.1:8011"
    assert p.command[p.command.index("--port") + 1] == "8011"
    assert p.command[p.command.index("--tensor-parallel-size") + 1] == "4"
    assert p.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert p.log_path.parent == tmp_path and p.log_path.name.startswith("vllm-")
    assert p.metrics_path == "/metrics" and p.energy_path is None
    trt = plan(LaunchOptions(engine="trtllm"), url=None, model="m", gpus=None)
    assert trt.energy_path == "/energy_metrics"
    assert trt.url.startswith("http://127.0.0.1:")  # a free port chosen for it


def test_plan_refuses_contradictions() -> None:
    with pytest.raises(ConfigError, match="needs --url"):
        plan(LaunchOptions(launch="server --port 1"), url=None, model=None, gpus=None)
    with pytest.raises(ConfigError, match="not both"):
        plan(LaunchOptions(launch="x", engine="vllm"), url="http://h:1", model="m", gpus=None)
    with pytest.raises(ConfigError, match="--engine-args"):
        plan(LaunchOptions(launch="x", engine_args="--y"), url="http://h:1", model=None, gpus=None)
    with pytest.raises(ConfigError, match="names no port"):
        plan(LaunchOptions(engine="vllm"), url="http://host", model="m", gpus=None)
    custom = plan(
        LaunchOptions(launch="srv --port 1", ready_path="/ping"),
        url="http://h:1",
        model=None,
        gpus=None,
    )
    assert custom.ready_paths == ("/ping",) and custom.command == "srv --port 1"
