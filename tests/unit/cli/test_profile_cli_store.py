"""``joulebench profile --store``: a store it cannot use fails before any model is loaded."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from joulebench.cli.app import app
from joulebench.results.schema import SCHEMA_VERSION
from joulebench.results.store import ResultStore

runner = CliRunner()


def test_newer_store_fails_before_loading_the_model(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    with ResultStore(path) as db:
        db.con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    # the model does not exist: had it been loaded first, the error would be about the model
    r = runner.invoke(
        app,
        [
            "profile",
            "--model",
            str(tmp_path / "no-such-model"),
            "--store",
            str(path),
            "--meter",
            "fake",
        ],
    )
    assert r.exit_code == 2, r.output
    assert "schema version" in r.output and "no-such-model" not in r.output
