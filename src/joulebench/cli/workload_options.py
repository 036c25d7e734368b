"""``--prompts`` and ``--output-length``, shared by ``load``, ``shape-compare`` and ``shape-sweep``.

One reading of each, so the same words mean the same workload in every serving command:

- ``--prompts``: ``quick`` or ``paper`` (synthetic, study-like), a ``.jsonl``/``.parquet``/``.csv``
  file or ``hf:<dataset>[:<split>]`` (all through :func:`joulebench.workloads.prompts.load_prompts`),
  or a ``.txt`` file with one prompt per line.
- ``--output-length``: ``natural`` (or ``natural:CAP``: let the model stop at EOS, ``max_tokens``
  = the cap, 1024 by default), ``reference`` (each prompt's reference answer length) or a number
  ``N``. Over HTTP these are ``max_tokens`` limits: OpenAI and TGI have no portable way to force a
  minimum, so a model may stop earlier at EOS, and token counts come from the server's ``usage``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from joulebench.errors import ConfigError
from joulebench.workloads.output_length import OutputLength

PromptsOpt = Annotated[
    str,
    typer.Option(
        "--prompts",
        help="quick, paper, a .jsonl/.parquet/.csv/.txt file, or hf:<dataset>[:<split>].",
    ),
]
OutputLengthOpt = Annotated[
    str,
    typer.Option(
        "--output-length",
        help="natural[:CAP] (stop at EOS, CAP as max_tokens), or a forced length: reference "
        "(each prompt's answer length) or N tokens — for a load, forced lengths send ignore_eos "
        "(vLLM, SGLang, llama.cpp, joulebench serve) and answers short of it count as truncated.",
    ),
]


def read_prompts(
    spec: str, *, n: int, seed: int = 0, tokenizer: Any = None
) -> tuple[list[Any], list[int] | None]:
    """Prompts and, when the set has them for every prompt, reference output lengths.

    A ``.txt`` file is read as one prompt per line; anything else (``quick``, ``paper``, a
    ``.jsonl``/``.parquet``/``.csv`` file, ``hf:…``) goes to
    :func:`joulebench.workloads.prompts.load_prompts`, with lengths measured in ``tokenizer``
    (joulebench's bundled tokenizer when None, which is the embedded tiny model's own).
    """
    path = Path(spec).expanduser()
    if path.suffix == ".txt":
        if not path.is_file():
            raise ConfigError(f"--prompts: prompt file {path} does not exist")
        items: list[Any] = [
            line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    else:
        from joulebench.workloads.prompts import load_prompts

        items = list(load_prompts(spec, n=n, seed=seed, tokenizer=tokenizer))
    if not items:
        raise ConfigError(f"--prompts: prompt set {spec!r} is empty")
    refs = [getattr(p, "reference_output_tokens", None) for p in items]
    if all(isinstance(r, int) and r > 0 for r in refs):
        return items, [int(r) for r in refs]  # type: ignore[arg-type]
    return items, None


def output_lengths(text: str, refs: list[int] | None) -> int | list[int]:
    """``max_tokens`` per request: one number, or one per prompt for ``reference``."""
    policy = OutputLength.parse(text)
    if policy.kind == "fixed":
        return int(policy.fixed or 0)
    if policy.kind == "natural":
        return policy.natural_cap
    if refs is None:
        raise ConfigError(
            "--output-length reference: this prompt set has no reference answer lengths; "
            "pass natural or a number of tokens"
        )
    return list(refs)


def describe_output_length(text: str) -> str:
    """The canonical spelling (``natural``, ``natural:64``, ``reference``, ``32``) for configs."""
    return str(OutputLength.parse(text))
