"""What differs between the transformers versions joulebench runs on, decided once per model.

transformers renamed the KV-cache argument of ``forward`` from ``past_key_values`` to ``cache``
(5.23 accepts the old name but logs a deprecation warning on every process; 5.17, the GPU
machine's version, only knows the old one). Passing the name the model's own ``forward`` declares
is the fix at the cause: no warning to filter, and the same code runs on both.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

#: The argument names transformers has used for the KV cache, newest first.
CACHE_ARG_NAMES = ("cache", "past_key_values")


def cache_arg_name(model: Any) -> str:
    """The keyword ``model.forward`` takes its KV cache by (``cache`` or ``past_key_values``)."""
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a compiled or wrapped forward without a signature
        params = {}
    for name in CACHE_ARG_NAMES:
        if name in params:
            return name
    # A forward that takes **kwargs only: ask the installed transformers which name it reads.
    return "cache" if _transformers_renamed_cache() else "past_key_values"


def _transformers_renamed_cache() -> bool:
    try:
        from transformers.utils import generic
    except ImportError:
        return False
    return hasattr(generic, "_rename_kwargs_for_bc")


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` with the name ``model`` takes, to splat into a forward call."""
    return {cache_arg_name(model): cache}


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' own progress bars (``Loading weights``) off for the block, then restored.

    joulebench prints its own progress; a third-party bar in its output is noise a user did not
    ask for. This uses transformers' documented switch, scoped to the call.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
