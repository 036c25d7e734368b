"""Shared fixtures: an isolated joulebench cache and the tiny model, built once per session.

Nothing downloads at test time: the Hugging Face hub is put in offline mode before transformers
or datasets are imported, so a hub id fails fast instead of waiting on the network.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# A test run started in the background (`make test &`, some CI shells) inherits SIGINT ignored,
# and so would every joulebench subprocess a test starts: the Ctrl-C tests' SIGINT would vanish
# and the runs complete with exit 0. A Python handler is reset to the default on exec, so the
# children get SIGINT back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def joulebench_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A per-session ``$JOULEBENCH_CACHE`` so tests never write to ~/.cache."""
    path = tmp_path_factory.mktemp("joulebench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JOULEBENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_model_dir(joulebench_cache: Path) -> Path:
    """Directory of a tiny llama model (config, weights, tokenizer, chat template), built once.

    Load it by path like any model: ``load_model(str(tiny_model_dir), "fp32")``; the same model
    is what ``load_model("tiny")`` returns.
    """
    from joulebench.workloads.tiny import tiny_model_path

    return tiny_model_path("llama", "tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer (left padding, eos and pad tokens, ChatML template)."""
    from joulebench.workloads.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))
