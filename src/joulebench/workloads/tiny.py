"""Tiny real models for tests and the CPU demo, and the bundled offline tokenizer.

A tiny model is a genuine transformers model (llama, qwen2 or mistral architecture) built from a
small config with random weights, with a byte-level BPE tokenizer trained offline on the chat
corpus shipped in the package, a ChatML chat template and eos/pad tokens. It is saved with
``save_pretrained`` and loaded back by path, through the same code users run on real models.

Builds are cached under ``$JOULEBENCH_CACHE`` (default ``~/.cache/joulebench``); a build goes to a
temporary directory renamed into place, so concurrent first uses never see half a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joulebench.errors import ConfigError, UnknownName
from joulebench.extras import require
from joulebench.workloads.corpus import corpus_texts
from joulebench.workloads.hf_compat import no_progress_bars

log = logging.getLogger(__name__)

TINY_ARCHS: tuple[str, ...] = ("llama", "qwen2", "mistral")
TINY_SIZES: tuple[str, ...] = ("tiny", "small")

#: Vocabulary of the bundled tokenizer (a multiple of 32, so even the lm_head suits 4-bit).
TOKENIZER_VOCAB = 1024
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_BUILD_VERSION = 1
_MARKER = "joulebench-tiny.json"

# Every linear output dimension is a multiple of 32 (bitsandbytes 4-bit needs it).
_SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
}
TINY_CONTEXT_LENGTH = 8192


def cache_dir() -> Path:
    """Where built tiny models and the bundled tokenizer are cached."""
    root = os.environ.get("JOULEBENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "joulebench"


def _corpus_digest() -> str:
    h = hashlib.sha256(f"v{_BUILD_VERSION}:{TOKENIZER_VOCAB}".encode())
    for text in corpus_texts():
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:12]


def _check_choice(kind: str, value: str, known: tuple[str, ...]) -> str:
    key = value.strip().lower()
    if key not in known:
        raise UnknownName(kind, value, list(known))
    return key


def _train_tokenizer() -> Any:
    """Byte-level BPE trained on the bundled corpus, wrapped in ``PreTrainedTokenizerFast``."""
    tk = require("tokenizers", "hf", "tiny models")
    transformers = require("transformers", "hf", "tiny models")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer)
    missing = TOKENIZER_VOCAB - tok.get_vocab_size()
    if missing > 0:  # a small corpus runs out of merges: pad with reserved tokens
        tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(missing)])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        padding_side="left",
        model_max_length=TINY_CONTEXT_LENGTH,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build_config(arch: str, size: str, vocab_size: int, eos_id: int, pad_id: int) -> Any:
    transformers = require("transformers", "hf", "tiny models")
    values: dict[str, Any] = dict(_SIZES[size])
    values.update(
        vocab_size=vocab_size,
        max_position_embeddings=TINY_CONTEXT_LENGTH,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=arch == "qwen2",
    )
    if arch == "mistral":
        values["sliding_window"] = None
    return transformers.AutoConfig.for_model(arch, **values)


def make_tiny(
    out_dir: str | Path, arch: str = "llama", size: str = "tiny", *, seed: int = 0
) -> Path:
    """Build a tiny model + tokenizer into ``out_dir`` (which must be absent or empty)."""
    arch = _check_choice("tiny architecture", arch, TINY_ARCHS)
    size = _check_choice("tiny size", size, TINY_SIZES)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty directory; choose a new path")
    torch = require("torch", "hf", "tiny models")
    transformers = require("transformers", "hf", "tiny models")

    tokenizer = _train_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = _build_config(arch, size, len(tokenizer), eos_id, pad_id)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = None

    out.mkdir(parents=True, exist_ok=True)
    with no_progress_bars():  # transformers' 'Writing model shards' bar
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "arch": arch,
        "size": size,
        "seed": seed,
        "vocab_size": len(tokenizer),
        "corpus_digest": _corpus_digest(),
        "build_version": _BUILD_VERSION,
    }
    (out / _MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    log.info("built tiny %s/%s model in %s", arch, size, out)
    return out


def _cached_build(name: str, build: Callable[[Path], Any]) -> Path:
    """Build once into the cache, atomically (temp dir + rename), safe under concurrency."""
    root = cache_dir()
    final = root / name
    if (final / _MARKER).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _MARKER).exists():  # not a lost race: a broken leftover
                raise ConfigError(
                    f"cache entry {final} exists but is incomplete; delete it and retry"
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_model_path(arch: str = "llama", size: str = "tiny") -> Path:
    """Path of the cached tiny model (built on first use)."""
    arch = _check_choice("tiny architecture", arch, TINY_ARCHS)
    size = _check_choice("tiny size", size, TINY_SIZES)
    name = f"tiny-{arch}-{size}-{_corpus_digest()}"
    return _cached_build(name, lambda tmp: make_tiny(tmp, arch, size))


def _save_tokenizer(out: Path) -> None:
    _train_tokenizer().save_pretrained(out)
    meta = {"vocab_size": TOKENIZER_VOCAB, "corpus_digest": _corpus_digest()}
    (out / _MARKER).write_text(json.dumps(meta) + "\n", encoding="utf-8")


def bundled_tokenizer_path() -> Path:
    """Path of the cached offline tokenizer that shape-only models are paired with."""
    return _cached_build(f"tokenizer-{_corpus_digest()}", _save_tokenizer)
