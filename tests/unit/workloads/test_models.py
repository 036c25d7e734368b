from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.workloads import models
from joulebench.workloads.models import load_model, load_tokenizer
from joulebench.workloads.sources import ModelSource, parse_model_source


def test_parse_model_source(tmp_path: Path, tiny_model_dir: Path) -> None:
    shape = parse_model_source("shape:qwen2.5-0.5b-instruct")
    assert (shape.kind, shape.ref, shape.name) == (
        "shape",
        "Qwen2.5-0.5B-Instruct",
        "Qwen2.5-0.5B-Instruct",
    )
    assert parse_model_source("shape:Qwen/Qwen2.5-0.5B-Instruct").ref == "Qwen2.5-0.5B-Instruct"
    tiny = parse_model_source("tiny")
    assert (tiny.kind, tiny.tiny, tiny.name) == ("tiny", ("llama", "tiny"), "tiny-llama-tiny")
    assert parse_model_source(" TINY:Qwen2:small ").tiny == ("qwen2", "small")
    local = parse_model_source(str(tiny_model_dir))
    assert (local.kind, local.ref, local.name) == (
        "local",
        str(tiny_model_dir),
        tiny_model_dir.name,
    )
    hub = parse_model_source(" Qwen/Qwen2.5-0.5B-Instruct")
    assert (hub.kind, hub.ref, hub.given) == (
        "hub",
        "Qwen/Qwen2.5-0.5B-Instruct",
        " Qwen/Qwen2.5-0.5B-Instruct",
    )
    assert parse_model_source(hub) is hub
    with pytest.raises(ConfigError, match="not a tiny model"):
        _ = hub.tiny
    with pytest.raises(ConfigError, match="does not exist"):
        parse_model_source(str(tmp_path / "missing"))
    (tmp_path / "f.bin").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        parse_model_source(str(tmp_path / "f.bin"))
    with pytest.raises(ConfigError, match="empty"):
        parse_model_source("  ")
    with pytest.raises(UnknownName, match="model shape"):
        parse_model_source("shape:Nope-1B")
    with pytest.raises(ConfigError, match="architecture must be one of"):
        parse_model_source("tiny:gpt9")
    with pytest.raises(ConfigError, match="tiny:<arch>:<size>"):
        parse_model_source("tiny:llama:tiny:x")


def test_a_parsed_source_loads_like_its_string(tiny_model_dir: Path) -> None:
    src = parse_model_source(str(tiny_model_dir))
    assert isinstance(src, ModelSource)
    assert load_tokenizer(src).name_or_path == load_tokenizer(str(tiny_model_dir)).name_or_path


def test_hub_id_offline_says_how_to_pass_a_local_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_model("joulebench-test/no-such-model", "fp32")
    msg = str(info.value)
    assert "cannot be fetched" in msg and "local path" in msg and "shape:" in msg


def test_local_dir_without_tokenizer_says_so(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="no usable tokenizer"):
        load_model(str(tmp_path / "m"))


def test_dir_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="not a transformers model directory"):
        load_model(str(tmp_path))


@pytest.mark.parametrize(("precision", "fragment"), [("fp8", "8.9"), ("int4-torchao", "CUDA only")])
def test_impossible_combinations_fail_before_weights(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, precision: str, fragment: str
) -> None:
    def no_weights(*args, **kwargs):
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(models, "_load_weights", no_weights)
    monkeypatch.setattr(models, "build_shape_model", no_weights)
    with pytest.raises(ConfigError, match=fragment):
        load_model(str(tiny_model_dir), precision)
    with pytest.raises(ConfigError, match=fragment):
        load_model("shape:Llama-3.1-8B-Instruct", precision)


def test_nf4_refused_for_odd_dims_before_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from transformers import AutoConfig

    odd = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=100,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
    )
    monkeypatch.setattr(models, "shape_config", lambda name: odd)
    monkeypatch.setattr(models, "build_shape_model", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ConfigError, match=r"divisible by 32.*alternatives on cpu: fp32"):
        load_model("shape:Llama-3.1-8B-Instruct", "int4-nf4")


def test_bad_tiny_spec() -> None:
    with pytest.raises(ConfigError, match="architecture must be one of"):
        load_model("tiny:gpt2")
    with pytest.raises(ConfigError, match="tiny:<arch>:<size>"):
        load_model("tiny:llama:tiny:extra")


def test_shape_source_uses_bundled_tokenizer_and_records_it(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    """The shape branch end to end, with a tiny stand-in config (a real shape is GPU-sized)."""
    from transformers import AutoConfig

    small = AutoConfig.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(models, "shape_config", lambda name: small)
    loaded = load_model("shape:QWEN2.5-0.5B-instruct", "bf16", seed=3)
    assert loaded.kind == "shape" and loaded.shape_only and loaded.name == "Qwen2.5-0.5B-Instruct"
    assert loaded.n_params == 494_032_768  # the real shape's count is what is recorded
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert len(loaded.tokenizer) <= small.vocab_size
    rec = loaded.record()
    assert rec["shape_only"] and rec["seed"] == 3 and "forced" in rec["note"]
    assert rec["tokenizer"] == "joulebench bundled tokenizer"
    assert rec["precision"]["dtype"] == "bfloat16"
    assert not loaded.model.training


def test_load_tokenizer_only(tiny_model_dir: Path) -> None:
    tok = load_tokenizer("shape:Mistral-7B-Instruct-v0.3")
    assert tok.padding_side == "left" and len(tok) < 32768
    assert len(load_tokenizer(str(tiny_model_dir))) == len(tok)
