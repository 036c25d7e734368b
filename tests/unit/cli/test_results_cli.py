"""``joulebench results list/export`` and what ``measure --store --name`` records."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from joulebench.cli.app import app
from joulebench.results.schema import TABLES
from joulebench.results.store import ResultStore

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "r.duckdb"
    with ResultStore(path) as db:
        run = db.start_run("measure", config={"command": ["true"]}, name="first")
        db.add_timeline(run, [(0.0, {"cpu:0": 0.0}), (0.1, {"cpu:0": 1.5})], {"cpu:0": "estimated"})
        db.add_audits(run, None, [{"name": "window_length", "passed": True, "detail": "ok"}])
        db.finish_run(run, status="done", summary={"energy_j": 1.5})
        db.finish_run(db.start_run("profile", name="second"), status="failed")
    return path


def test_list_json_filters_by_kind(store: Path) -> None:
    r = runner.invoke(app, ["results", "list", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["kind"], x["name"], x["status"]) for x in rows] == [
        ("measure", "first", "done"),
        ("profile", "second", "failed"),
    ]
    r = runner.invoke(
        app, ["results", "list", "--store", str(store), "--kind", "profile", "--json"]
    )
    assert [x["name"] for x in json.loads(r.stdout)] == ["second"]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_export_writes_every_table_with_its_rows(store: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out-{fmt}"
    r = runner.invoke(app, ["results", "export", str(out), "--store", str(store), "--format", fmt])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.{fmt}" for t in TABLES)
    if fmt == "csv":
        with (out / "timelines.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [(r["domain"], float(r["energy_j"]), r["method"]) for r in rows] == [
            ("cpu:0", 0.0, "estimated"),
            ("cpu:0", 1.5, "estimated"),
        ]
    elif fmt == "json":
        runs = json.loads((out / "runs.json").read_text())
        assert {r["name"] for r in runs} == {"first", "second"}
    else:
        import duckdb

        con = duckdb.connect()
        n = con.execute(f"SELECT count(*) FROM '{out / 'audits.parquet'}'").fetchone()[0]
        con.close()
        assert n == 1


def test_export_and_list_errors_exit_2(store: Path, tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["results", "export", str(tmp_path / "o"), "--store", str(store), "--format", "xml"]
    )
    assert r.exit_code == 2 and "parquet, csv, json" in r.stderr
    r = runner.invoke(app, ["results", "list", "--store", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 2 and "no results store" in r.stderr


def test_measure_stores_the_run_name(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "joulebench", "measure", "--meter", "fake", "--store", str(db)]
    cmd += [
        "--name",
        "nightly",
        "--json",
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(0.3)",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    with ResultStore(db, read_only=True) as store:
        (row,) = store.runs("measure")
    assert (row["run_id"], row["name"], row["status"]) == (run_id, "nightly", "done")
    assert json.loads(row["meter"])["methods"] == {"gpu:0": "fake"}
