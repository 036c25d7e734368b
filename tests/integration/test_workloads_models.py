"""Tiny real models loaded by path in every CPU precision, generating forced-length outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.workloads.models import load_model
from joulebench.workloads.output_length import OutputLength
from joulebench.workloads.prompts import load_prompts

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")

CPU_PRECISIONS = ["fp32", "bf16", "fp16", "int8-bnb", "int4-nf4", "int4-fp4", "int8-torchao"]


@pytest.mark.parametrize("precision", CPU_PRECISIONS)
def test_load_by_path_and_generate(tiny_model_dir: Path, precision: str) -> None:
    loaded = load_model(str(tiny_model_dir), precision)
    assert loaded.kind == "local" and loaded.precision.name == precision
    assert loaded.memory_bytes > 0 and loaded.load_time_s >= 0 and loaded.context_length == 8192
    rec = loaded.record()
    assert rec["precision"]["knobs"] == dict(loaded.precision.knobs)
    assert rec["libraries"]["torch"] and rec["libraries"]["transformers"]

    tok = loaded.tokenizer
    prompts = load_prompts("quick", n=2, seed=0, tokenizer=tok).encode(tok)
    policy = OutputLength.parse("reference")
    # left-padded batch of two prompts of different lengths
    batch = tok.pad({"input_ids": [p.input_ids for p in prompts]}, return_tensors="pt")
    n_new = min(policy.max_new_tokens(p) for p in prompts)
    with torch.no_grad():
        out = loaded.model.generate(
            **batch, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False
        )
    assert out.shape == (2, batch["input_ids"].shape[1] + n_new)
    assert batch["attention_mask"][:, -1].all()  # left padding: every row ends with a real token


def test_memory_shrinks_with_quantization(tiny_model_dir: Path) -> None:
    mem = {p: load_model(str(tiny_model_dir), p).memory_bytes for p in ("fp32", "fp16", "int4-nf4")}
    assert mem["fp32"] > mem["fp16"] > mem["int4-nf4"]


def test_tiny_source_and_seed_determinism(tiny_model_dir: Path) -> None:
    a = load_model("tiny", "fp32")
    b = load_model(str(tiny_model_dir), "fp32")
    assert a.kind == "tiny" and a.name == "tiny-llama-tiny"
    x = torch.tensor([[1, 5, 9, 30]])
    with torch.no_grad():
        assert torch.equal(a.model(x).logits, b.model(x).logits)  # same files, same model


def test_local_copy_roundtrip(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A model saved by the user to a directory loads like any model (the local path form)."""
    src = load_model(str(tiny_model_dir), "fp32")
    src.model.save_pretrained(tmp_path / "copy")
    src.tokenizer.save_pretrained(tmp_path / "copy")
    copy = load_model(str(tmp_path / "copy"), "bf16")
    assert copy.name == "copy" and copy.n_params == src.n_params
