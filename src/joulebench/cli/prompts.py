"""``joulebench prompts``: inspect a prompt set in a model's tokens."""

from __future__ import annotations

import typer
from rich.table import Table

from joulebench.cli.common import console, handle_errors, print_json
from joulebench.errors import ConfigError
from joulebench.workloads.models import load_tokenizer
from joulebench.workloads.prompts import load_prompts

prompts_app = typer.Typer(
    help="Prompt sets (paper, quick, files, hf:<dataset>).", no_args_is_help=True
)


@prompts_app.command("stats")
@handle_errors
def stats(
    spec: str = typer.Argument(
        ..., help="paper, quick, a .jsonl/.parquet/.csv file or hf:NAME[:SPLIT]."
    ),
    model: str = typer.Option("tiny", "--model", help="Model whose tokenizer counts the tokens."),
    n: int = typer.Option(None, "--n", help="Number of prompts (default: the set's own)."),
    seed: int = typer.Option(0, "--seed", help="Seed for synthetic sets and sampling."),
    column: list[str] = typer.Option(
        None,
        "--column",
        help="Files and hf: sets: FIELD=COLUMN, e.g. prompt=text or messages=conversation "
        "(fields: messages, prompt, id, reference_output_tokens, reference). Repeatable.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Exact token statistics of a prompt set, after the model's chat template."""
    columns = parse_columns(column or [])
    tokenizer = load_tokenizer(model)
    prompt_set = load_prompts(spec, n=n, seed=seed, tokenizer=tokenizer, columns=columns or None)
    result = prompt_set.stats(tokenizer)
    result["model"] = model
    if as_json:
        print_json(result)
        return
    table = Table("tokens", "min", "mean", "median", "p90", "max")
    for key in ("input_tokens", "reference_output_tokens", "turns"):
        s = result.get(key)
        if s:
            table.add_row(key, *(f"{s[k]:.0f}" for k in ("min", "mean", "median", "p90", "max")))
    console.print(f"{result['name']}: {result['n']} prompts, tokenizer of {model}")
    console.print(table)


def parse_columns(items: list[str]) -> dict[str, str]:
    """``["prompt=text", …]`` → ``{"prompt": "text"}``; a malformed item says what to write."""
    columns: dict[str, str] = {}
    for item in items:
        fld, sep, col = item.partition("=")
        if not sep or not fld.strip() or not col.strip():
            raise ConfigError(f"--column {item!r}: write FIELD=COLUMN, e.g. --column prompt=text")
        if fld.strip() in columns:
            raise ConfigError(f"--column maps {fld.strip()!r} twice")
        columns[fld.strip()] = col.strip()
    return columns


def register(app: typer.Typer) -> None:
    app.add_typer(prompts_app, name="prompts")
