from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.workloads import tiny
from joulebench.workloads.precision import linear_out_dims


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_make_tiny_builds_a_loadable_chat_model(tmp_path: Path, arch: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    out = tiny.make_tiny(tmp_path / arch, arch=arch)
    config = AutoConfig.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert config.model_type == arch
    assert config.vocab_size == len(tok) == tiny.TOKENIZER_VOCAB
    assert all(v % 32 == 0 for v in linear_out_dims(config).values())
    assert config.vocab_size % 32 == 0
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    assert tok.padding_side == "left"
    assert config.eos_token_id == tok.eos_token_id
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")
    meta = json.loads((out / "joulebench-tiny.json").read_text())
    assert meta["arch"] == arch and meta["size"] == "tiny"


def test_tokenizer_is_byte_level_and_realistic(tiny_tokenizer) -> None:
    odd = "Ünïcode → ok 🙂"
    ids = tiny_tokenizer(odd, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == odd  # byte-level: nothing is lost
    text = "Thank you so much, that was really helpful. How should I start running?"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    # trained on English chat text: common words are merged, far fewer tokens than characters
    assert len(ids) < len(text) / 2.5


def test_small_is_bigger_than_tiny(tmp_path: Path) -> None:
    from transformers import AutoConfig

    small = AutoConfig.from_pretrained(tiny.make_tiny(tmp_path / "s", size="small"))
    assert small.hidden_size > tiny._SIZES["tiny"]["hidden_size"]
    assert all(v % 32 == 0 for v in linear_out_dims(small).values())


def test_make_tiny_refuses_non_empty_dir_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("busy")
    with pytest.raises(ConfigError, match="not an empty directory"):
        tiny.make_tiny(tmp_path)
    with pytest.raises(UnknownName, match="known: llama, mistral, qwen2"):
        tiny.make_tiny(tmp_path / "new", arch="gpt2")
    with pytest.raises(UnknownName, match="small, tiny"):
        tiny.make_tiny(tmp_path / "new", size="huge")


def test_cached_build_is_safe_under_concurrent_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOULEBENCH_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []
    barrier = threading.Barrier(2)

    def slow_build(out: Path) -> None:
        calls.append(1)
        barrier.wait(timeout=10)  # both builders are inside the build at the same time
        (out / "payload").write_text(str(len(calls)))
        (out / tiny._MARKER).write_text("{}")

    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(tiny._cached_build("entry", slow_build))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(calls) == 2 and results[0] == results[1]
    final = results[0]
    assert (final / tiny._MARKER).exists() and (final / "payload").exists()
    leftovers = [p for p in final.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the loser's temporary directory is removed


def test_incomplete_cache_entry_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOULEBENCH_CACHE", str(tmp_path))
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "junk").write_text("half a build")

    def build(out: Path) -> None:
        (out / tiny._MARKER).write_text("{}")

    with pytest.raises(ConfigError, match="incomplete"):
        tiny._cached_build("entry", build)


def test_tiny_model_path_is_cached(tiny_model_dir: Path) -> None:
    assert tiny.tiny_model_path("llama", "tiny") == tiny_model_dir
    assert tiny_model_dir.parent == tiny.cache_dir()
