"""``joulebench report`` and ``joulebench estimate`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from joulebench.cli import estimate as estimate_cli
from joulebench.cli import report as report_cli


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    estimate_cli.register(app)
    report_cli.register(app)
    return app


def run(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, list(args))


def test_estimate_json_study_example(app: typer.Typer) -> None:
    res = run(
        app,
        "estimate",
        "--wh-per-request",
        "0.12",
        "--requests-per-day",
        "1e6",
        "--country",
        "FR",
        "--json",
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["kwh_per_day"] == pytest.approx(120.0)
    assert d["households"] == pytest.approx(120 * 365 / 4255)
    assert d["grid"]["code"] == "FR" and d["kg_co2e_per_day"] > 0 and d["method"] == "given"


def test_estimate_text(app: typer.Typer) -> None:
    res = run(app, "estimate", "--wh-per-request", "1.1e-3", "--requests-per-day", "1000000")
    assert res.exit_code == 0 and "kWh per day:        1.1" in res.stdout
    assert "give --country" in res.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--wh-per-request", "-1", "--requests-per-day", "10"), "--wh-per-request"),
        (("--wh-per-request", "0.1", "--requests-per-day", "0"), "--requests-per-day"),
        (("--wh-per-request", "0.1", "--requests-per-day", "10", "--country", "ZZ"), "known: AE"),
        (("--requests-per-day", "10"), "exactly one of"),
        (("--wh-per-request", "0.1", "--requests-per-day", "10", "--cell", "x"), "need --from"),
    ],
)
def test_estimate_bad_input_exits_2(app: typer.Typer, args: tuple[str, ...], needle: str) -> None:
    res = run(app, "estimate", *args)
    assert res.exit_code == 2
    assert needle in " ".join(res.output.split())


def test_estimate_from_store(app: typer.Typer, load_only_store: Path) -> None:
    res = run(
        app, "estimate", "--from", str(load_only_store), "--requests-per-day", "1000", "--json"
    )
    assert res.exit_code == 2 and "choose one" in res.output
    from joulebench.analysis.records import read_store
    from joulebench.results.store import ResultStore

    with ResultStore(load_only_store, read_only=True) as db:
        run_id = next(lr.run.run_id for lr in read_store(db).load_runs if lr.arrival == "burst")
    res = run(app, "estimate", "--from", str(load_only_store), "--run", run_id, "--accounting",
              "paper_whole_window", "--requests-per-day", "1e6", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["kwh_per_day"] == pytest.approx(9.6) and d["method"] == "estimated"
    assert run_id in d["source"]


def test_report_command(app: typer.Typer, full_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = run(app, "report", str(full_store), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert Path(d["index_html"]).exists() and len(d["figures"]) == 9 and d["missing"] == []


def test_report_missing_store_exits_2(app: typer.Typer, tmp_path: Path) -> None:
    res = run(app, "report", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "no results store" in res.output
