"""Load a prompt set by name: the synthetic sets, local files or Hugging Face datasets.

Sources (see :func:`load_prompts`): the synthetic ``paper`` and ``quick`` sets, local JSONL /
Parquet / CSV files, and Hugging Face datasets. The types they all build live in
:mod:`joulebench.workloads.prompt_set`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joulebench.errors import ConfigError
from joulebench.workloads import prompt_files, synthetic
from joulebench.workloads.prompt_set import PromptSet


def load_prompts(
    spec: str,
    *,
    n: int | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    columns: Mapping[str, str] | None = None,
) -> PromptSet:
    """Load a prompt set.

    ``spec``: ``paper`` (study-like synthetic set: needs ``tokenizer``, lengths are measured in
    it), ``quick`` (the same, short, for CPU runs), a ``.jsonl`` / ``.parquet`` / ``.csv`` path,
    or ``hf:<dataset>[:<split>]``. ``n`` keeps that many prompts (a seeded sample for files and
    datasets). ``columns`` maps joulebench fields (``messages``, ``prompt``, ``id``,
    ``reference_output_tokens``, ``reference``) to the source's column names.
    """
    if n is not None and n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    text = str(spec).strip()
    key = text.lower()
    if key in synthetic.PROFILES:
        if columns:
            raise ConfigError(f"columns do not apply to the synthetic '{key}' set")
        return synthetic.synthetic_prompts(key, n=n, seed=seed, tokenizer=tokenizer)
    if key.startswith("hf:"):
        return prompt_files.load_hf_dataset(text[3:], n=n, seed=seed, columns=columns)
    if key.endswith((".jsonl", ".parquet", ".csv")):
        return prompt_files.load_file(text, n=n, seed=seed, columns=columns)
    raise ConfigError(
        f"prompt set '{spec}' is not understood; use paper, quick, a .jsonl/.parquet/.csv file "
        "or hf:<dataset>[:<split>]"
    )
