"""Prompt sets from local files (JSONL, Parquet, CSV) and Hugging Face datasets.

Each row gives either ``messages`` (a list of ``{role, content}``, or its JSON text in a CSV cell)
or a single ``prompt`` string (sent as one user turn). A conversation that ends with an assistant
turn has that turn taken off and used as the reference answer, whose exact token count the
target tokenizer gives later. ``reference_output_tokens`` (an integer column) overrides it.
Errors name the file and the line or row, and a missing column lists those available.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from joulebench.errors import ConfigError
from joulebench.extras import require
from joulebench.workloads.prompt_set import Prompt, PromptSet, validate_messages

log = logging.getLogger(__name__)

FIELDS = ("messages", "prompt", "id", "reference_output_tokens", "reference")


def _resolve_columns(available: list[str], columns: Mapping[str, str] | None, where: str) -> dict:
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown column mapping key(s) {unknown}; map these fields: {', '.join(FIELDS)}"
        )
    for fld, col in mapping.items():
        if col not in available:
            raise ConfigError(
                f"{where}: column '{col}' (for {fld}) not found; available columns: "
                f"{', '.join(available) or 'none'}"
            )
    resolved = {fld: mapping.get(fld, fld) for fld in FIELDS}
    resolved = {fld: col for fld, col in resolved.items() if col in available}
    if "messages" not in resolved and "prompt" not in resolved:
        raise ConfigError(
            f"{where}: no 'messages' or 'prompt' column; available columns: "
            f"{', '.join(available) or 'none'}; map one with columns={{'prompt': COL}} "
            "or {'messages': COL} (on the command line: --column prompt=COL)"
        )
    return resolved


def _row_to_prompt(row: Mapping[str, Any], cols: dict, default_id: str, where: str) -> Prompt:
    if "messages" in cols:
        raw = row.get(cols["messages"])
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: messages is not valid JSON ({exc.msg})") from exc
        if raw is None:
            raise ConfigError(f"{where}: missing value in column '{cols['messages']}'")
        messages = validate_messages(list(raw) if not isinstance(raw, list) else raw, where)
    else:
        text = row.get(cols["prompt"])
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: column '{cols['prompt']}' must be a non-empty string")
        messages = [{"role": "user", "content": text}]
    reference_text = None
    if messages[-1]["role"] == "assistant":
        reference_text = messages.pop()["content"]
    if not messages or messages[-1]["role"] != "user":
        raise ConfigError(f"{where}: the conversation must end with a user turn to answer")
    if "reference" in cols and row.get(cols["reference"]) is not None:
        reference_text = str(row[cols["reference"]])
    ref_tokens = None
    if "reference_output_tokens" in cols and row.get(cols["reference_output_tokens"]) is not None:
        value = row[cols["reference_output_tokens"]]
        try:
            ref_tokens = int(value)
            if ref_tokens != float(value) or ref_tokens < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: reference_output_tokens must be a positive integer, got {value!r}"
            ) from None
    pid = str(row[cols["id"]]) if "id" in cols and row.get(cols["id"]) is not None else default_id
    return Prompt(pid, messages, ref_tokens, reference_text)


def _sample(total: int, n: int | None, seed: int) -> list[int]:
    if n is None or n >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), n))


def _read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
                ) from exc
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{lineno}: each line must be a JSON object")
            rows.append(obj)
            lines.append(lineno)
    return rows, lines


def _read_csv(path: Path) -> tuple[list[dict], list[int]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows, lines = [], []
        for row in reader:
            rows.append(dict(row))
            lines.append(reader.line_num)
    return rows, lines


def _read_parquet(path: Path) -> tuple[list[dict], list[int]]:
    pq = require("pyarrow.parquet", "datasets", "Parquet prompt files")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own error types
        raise ConfigError(f"{path}: cannot read Parquet ({exc})") from exc
    return rows, list(range(1, len(rows) + 1))


_READERS: dict[str, Callable[[Path], tuple[list[dict], list[int]]]] = {
    ".jsonl": _read_jsonl,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


def load_file(
    path_text: str, *, n: int | None, seed: int, columns: Mapping[str, str] | None
) -> PromptSet:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"prompt file {path} does not exist")
    reader = _READERS[path.suffix.lower()]
    rows, lines = reader(path)
    if not rows:
        raise ConfigError(f"prompt file {path} has no rows")
    available = list(dict.fromkeys(k for row in rows for k in row))
    cols = _resolve_columns(available, columns, str(path))
    unit = "row" if path.suffix.lower() == ".parquet" else "line"
    prompts = [
        _row_to_prompt(rows[i], cols, f"{path.stem}-{i}", f"{path}:{unit} {lines[i]}")
        for i in _sample(len(rows), n, seed)
    ]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    source: dict[str, Any] = {"kind": "file", "path": str(path), "sha256": digest}
    source.update(n=n, seed=seed, columns=cols)
    return PromptSet(path.stem, prompts, source)


def load_hf_dataset(
    spec: str, *, n: int | None, seed: int, columns: Mapping[str, str] | None
) -> PromptSet:
    """``spec`` is ``<dataset>[:<split>]`` (split defaults to ``train``)."""
    name, _, split = spec.partition(":")
    split = split or "train"
    if not name:
        raise ConfigError("hf: needs a dataset name, e.g. hf:HuggingFaceH4/ultrachat_200k:test_sft")
    datasets = require("datasets", "datasets", "Hugging Face prompt sets")
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, hub and builder errors all mean: cannot get it here
        raise ConfigError(
            f"cannot load dataset '{name}' split '{split}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}). Offline, export it on a "
            "connected machine (dataset.to_json('prompts.jsonl')) and pass the .jsonl file"
        ) from exc
    available = list(data.column_names)
    where = f"hf:{name}:{split}"
    cols = _resolve_columns(available, columns, where)
    indices = _sample(len(data), n, seed)
    subset = data.select(indices)
    prompts = [
        _row_to_prompt(row, cols, f"{name.split('/')[-1]}-{idx}", f"{where} row {idx}")
        for idx, row in zip(indices, subset, strict=True)
    ]
    if not prompts:
        raise ConfigError(f"{where} has no rows")
    fingerprint = getattr(data, "_fingerprint", None)
    source: dict[str, Any] = {"kind": "hf", "dataset": name, "split": split, "n": n, "seed": seed}
    source.update(columns=cols, fingerprint=fingerprint)
    return PromptSet(name.split("/")[-1], prompts, source)
