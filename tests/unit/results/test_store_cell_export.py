"""Moving one cell between stores: ``export_cell`` / ``import_cell`` (sweep workers → driver)."""

from __future__ import annotations

import json

import pytest

from joulebench.errors import StoreError
from joulebench.results.store import ResultStore

REPEAT = {"phase": "prefill", "method": "direct", "idx": 0, "n_ops": 3, "duration_s": 0.5,
          "energy_j": 50.0, "net_energy_j": 20.0, "tokens": {"input": 8}, "domains": {"gpu:0": 50.0}}  # fmt: skip


def _cell(store: ResultStore, run_id: str, key: str, repeats: int = 2) -> None:
    store.start_cell(run_id, key, {"batch_size": 2}, study="batching")
    store.add_repeats(run_id, key, [REPEAT | {"idx": i} for i in range(repeats)])
    store.add_audits(run_id, key, [{"name": "window", "passed": True, "detail": "ok"}])
    store.finish_cell(run_id, key, result={"energy_j": 1.5, "meter_methods": {"gpu:0": "fake"}})


def test_in_memory_export_imports_into_a_file_store_exactly(tmp_path):
    with ResultStore(":memory:") as scratch:
        _cell(scratch, "sweep-1", "k1")
        _cell(scratch, "sweep-1", "other", repeats=1)  # another cell: not exported with k1
        rows = scratch.export_cell("sweep-1", "k1")
    assert set(rows) == {"cells", "repeats", "audits"}  # the tables that hold a cell's rows
    assert [len(rows[t]) for t in ("cells", "repeats", "audits")] == [1, 2, 1]
    with ResultStore(tmp_path / "r.duckdb") as store:
        assert store.import_cell(rows) == ("sweep-1", "k1")
        assert store.import_cell(rows) == ("sweep-1", "k1")  # again: replaced, not duplicated
        assert store.export_cell("sweep-1", "k1") == rows
        cell = store.query("SELECT status, study, result FROM cells")[0]
    assert cell["status"] == "done" and cell["study"] == "batching"
    assert json.loads(cell["result"])["meter_methods"] == {"gpu:0": "fake"}


def test_a_redone_cell_replaces_every_earlier_row(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as store:
        _cell(store, "run", "k", repeats=5)  # an earlier attempt with more repeats
        with ResultStore(":memory:") as scratch:
            _cell(scratch, "run", "k", repeats=2)
            rows = scratch.export_cell("run", "k")
        rows["repeats"][0]["tokens"] = {"input": 99}  # a dict for a JSON column is stored as JSON
        store.import_cell(rows)
        n = store.query("SELECT count(*) AS n FROM repeats")[0]["n"]
        tokens = store.query("SELECT tokens FROM repeats WHERE idx = 0")[0]["tokens"]
    assert n == 2 and json.loads(tokens) == {"input": 99}


def test_bad_exports_are_refused_and_leave_the_store_unchanged(tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as store:
        _cell(store, "run", "a")
        _cell(store, "run", "b")
        a, b = store.export_cell("run", "a"), store.export_cell("run", "b")
        with pytest.raises(StoreError, match="exactly one cell"):
            store.import_cell({"cells": a["cells"], "repeats": b["repeats"]})
        with pytest.raises(StoreError, match="exactly one cell"):
            store.import_cell({"repeats": a["repeats"]})  # no cells row
        with pytest.raises(StoreError, match=r"cannot import rows of \['timelines'\]"):
            store.import_cell(a | {"timelines": []})
        broken = a | {"audits": [a["audits"][0] | {"bogus": 1}]}
        with pytest.raises(StoreError, match=r"audits has no column\(s\) \['bogus'\]"):
            store.import_cell(broken)
        missing = a | {"repeats": [{k: v for k, v in a["repeats"][0].items() if k != "phase"}]}
        with pytest.raises(StoreError, match="cannot import cell a of run run"):
            store.import_cell(missing)  # NOT NULL phase: rolled back
        assert store.export_cell("run", "a") == a  # the failed imports changed nothing
