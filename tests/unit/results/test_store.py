from __future__ import annotations

import json
import os

import duckdb
import pytest

from joulebench.errors import StoreError
from joulebench.results.schema import SCHEMA_VERSION, TABLES
from joulebench.results.store import ResultStore, check_writable


def test_new_store_has_current_schema_and_every_table(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as db:
        assert db.schema_version == SCHEMA_VERSION
        names = {
            r["table_name"] for r in db.query("SELECT table_name FROM information_schema.tables")
        }
    assert set(TABLES) <= names


def test_run_roundtrip_keeps_config_environment_and_meter(tmp_path):
    path = tmp_path / "r.duckdb"
    with ResultStore(path) as db:
        run = db.start_run(
            "measure",
            config={"cmd": ["true"]},
            environment={"cpu": "x"},
            meter={"name": "estimate", "methods": {"cpu:0": "estimated"}},
        )
        db.finish_run(run, summary={"energy_j": 1.5})
    with ResultStore(path, read_only=True) as db:
        (row,) = db.runs("measure")
    assert row["status"] == "done"
    assert json.loads(row["meter"])["methods"] == {"cpu:0": "estimated"}
    assert json.loads(row["summary"]) == {"energy_j": 1.5}


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.duckdb"
    ResultStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="upgrade joulebench"):
        ResultStore(path)


def test_restarted_cell_discards_partial_rows(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as db:
        run = db.start_run("sweep", name="s")
        db.start_cell(run, "k1", {"batch": 1})
        db.add_repeats(
            run, "k1", [{"phase": "prefill", "method": "direct", "idx": 0, "energy_j": 1.0}]
        )
        db.add_audits(run, "k1", [{"name": "idle_floor", "passed": False, "detail": "x"}])
        assert db.cell_status(run, "k1") == "running"
        db.start_cell(run, "k1", {"batch": 1})  # resumed after a kill
        assert db.query("SELECT count(*) AS n FROM repeats")[0]["n"] == 0
        assert db.query("SELECT count(*) AS n FROM audits")[0]["n"] == 0
        db.finish_cell(run, "k1", result={"ok": True})
        assert db.cell_status(run, "k1") == "done"
        db.start_cell(run, "k2", {"batch": 2})
        db.finish_cell(run, "k2", error="OOM")
        assert db.cell_status(run, "k2") == "failed"
        assert db.find_run("sweep", "s") == run


def test_requests_keep_unknown_fields_in_extra(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as db:
        run = db.start_run("load")
        db.add_requests(run, [{"idx": 0, "status": "ok", "ttft_ms": 12.0, "itl_ms": [1, 2]}])
        (row,) = db.query("SELECT * FROM requests")
    assert row["ttft_ms"] == 12.0
    assert json.loads(row["extra"]) == {"itl_ms": [1, 2]}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_export_writes_one_file_per_table(tmp_path, fmt):
    with ResultStore(tmp_path / "r.duckdb") as db:
        run = db.start_run("measure")
        db.add_timeline(run, [(0.0, {"cpu:0": 0.0}), (0.1, {"cpu:0": 2.0})], {"cpu:0": "estimated"})
        files = db.export(tmp_path / "out", fmt)
    assert sorted(p.name for p in files) == sorted(f"{t}.{fmt}" for t in TABLES)
    assert all(p.stat().st_size > 0 for p in files if p.stem in {"runs", "timelines"})


def test_unknown_export_format_lists_known(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as db, pytest.raises(StoreError, match="parquet"):
        db.export(tmp_path / "o", "xlsx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_is_an_error_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StoreError, match="not writable"):
        check_writable(ro / "r.duckdb")


def test_store_path_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "d.duckdb").mkdir()
    with pytest.raises(StoreError, match="directory"):
        check_writable(tmp_path / "d.duckdb")


def test_read_only_missing_store_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(tmp_path / "none.duckdb", read_only=True)


def test_store_under_a_regular_file_is_an_error_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the store directory"):
        check_writable(blocker / "sub" / "r.duckdb")
