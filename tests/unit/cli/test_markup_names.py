"""User-given names reach the console as text, never as Rich markup (``[/]`` used to raise
``MarkupError``; ``[bold]`` used to vanish)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from joulebench.cli.app import app

NAME = "[/] [bold]x"


def test_sweep_named_with_markup_is_printed_verbatim(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = {
        "name": NAME,
        "models": [str(tiny_model_dir)],
        "precisions": ["fp32"],
        "batch_sizes": [1],
        "prompts": ["quick"],
        "n": 2,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(cfg))
    res = CliRunner().invoke(app, ["sweep", str(path), "--meter", "fake", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert NAME in res.output
