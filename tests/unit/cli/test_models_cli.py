from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from joulebench.cli import models as models_cli
from joulebench.cli import prompts as prompts_cli


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    models_cli.register(app)
    prompts_cli.register(app)
    return app


def test_models_list_json(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by_name = {r["name"]: r for r in rows}
    assert len(rows) == 8
    llama = by_name["Llama-3.1-8B-Instruct"]
    assert llama["num_layers"] == 32 and llama["hidden_size"] == 4096 and llama["num_kv_heads"] == 8
    assert llama["source"] == "shape:Llama-3.1-8B-Instruct"
    assert "fp8" not in llama["precisions"] and "int4-torchao" not in llama["precisions"]
    for row in rows:  # what fits is what is listed, the rest is named as too large
        assert set(row["precisions"]) | set(row["too_large"]) <= set(row["weight_bytes"])
        for p in row["precisions"]:
            assert row["weight_bytes"][p] <= 0.9 * row["device_memory_bytes"]
    assert by_name["Llama-3.1-70B-Instruct"]["too_large"]  # 70B never fits in this host's RAM


def test_models_list_table(app: typer.Typer) -> None:
    from joulebench.cli.common import console

    width = console.width
    console.width = 80  # a common terminal: every precision must stay readable, none cut off
    try:
        result = CliRunner().invoke(app, ["models", "list", "--device", "cpu"])
    finally:
        console.width = width
    assert result.exit_code == 0, result.output
    assert "Qwen2.5-0.5B" in result.output and "0.49B" in result.output
    assert "int8-torchao" in result.output and "int4-fp4" in result.output
    assert "…" not in result.output


def test_make_tiny_and_errors(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["models", "make-tiny", str(tmp_path / "m"), "--arch", "qwen2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").exists()
    assert (tmp_path / "m" / "tokenizer.json").exists()
    again = runner.invoke(app, ["models", "make-tiny", str(tmp_path / "m")])
    assert again.exit_code == 2 and "not an empty directory" in again.output
    bad = runner.invoke(app, ["models", "make-tiny", str(tmp_path / "x"), "--arch", "gpt2"])
    assert bad.exit_code == 2 and "known: llama, mistral, qwen2" in bad.output


def test_prompts_stats(app: typer.Typer, tiny_model_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["prompts", "stats", "quick", "--model", str(tiny_model_dir), "--n", "10", "--json"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["n"] == 10 and stats["input_tokens"]["max"] <= 160
    missing = CliRunner().invoke(app, ["prompts", "stats", "nope.jsonl"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_prompts_stats_column_mapping(app: typer.Typer, tiny_model_dir: Path, tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [{"text": "How do I boil an egg?", "n_out": 7}, {"text": "Thanks a lot!", "n_out": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    unmapped = runner.invoke(app, ["prompts", "stats", str(path), "--model", str(tiny_model_dir)])
    assert unmapped.exit_code == 2 and "--column prompt=COL" in " ".join(unmapped.output.split())
    args = ["prompts", "stats", str(path), "--model", str(tiny_model_dir), "--json"]
    result = runner.invoke(
        app, [*args, "--column", "prompt=text", "--column", "reference_output_tokens=n_out"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["n"] == 2 and stats["reference_output_tokens"]["total"] == 10
    assert stats["source"]["columns"]["prompt"] == "text"
    for bad, why in (("prompt", "FIELD=COLUMN"), ("nope=text", "unknown column mapping")):
        r = runner.invoke(app, [*args, "--column", bad])
        assert r.exit_code == 2 and why in " ".join(r.output.split()), r.output
