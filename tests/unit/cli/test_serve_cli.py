"""``joulebench serve`` refuses bad scheduler options before any model is loaded."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from joulebench.cli.app import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "continuous", "--bucket-ratio", "3"], "only apply to --scheduler dynamic"),
        (["--scheduler", "sequential", "--window-ms", "5"], "only apply to --scheduler dynamic"),
        (["--scheduler", "dynamic", "--bucket-ratio", "0.5"], "--bucket-ratio must be ≥ 1"),
        (["--scheduler", "dynamic", "--window-ms", "-1"], "--window-ms must be ≥ 0"),
        (
            ["--scheduler", "dynamic", "--bucketing", "size"],
            "--bucketing must be one of cost, ratio",
        ),
        (["--scheduler", "continuous", "--bucketing", "ratio"], "only apply to --scheduler"),
        (["--max-body-mib", "0"], "--max-body-mib must be > 0"),
    ],
)
def test_dynamic_only_options_are_checked(args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["serve", "--meter", "fake", *args])
    assert res.exit_code != 0
    assert message in " ".join(res.output.split())
