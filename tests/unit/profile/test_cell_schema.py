"""The profile cell's result against its declared type (results/cell.py), both ways: every key
profile_cell writes is declared with its type, and the declarations refuse what they do not name.
"""

from __future__ import annotations

import json
import warnings

import pytest

from joulebench.analysis.roofline import given_peak
from joulebench.errors import JoulebenchWarning
from joulebench.meters.fake import FakeMeter
from joulebench.meters.window import IdleBaseline
from joulebench.profile.config import ProfileConfig
from joulebench.profile.runner import profile_cell
from joulebench.results.cell import validate_cell_result
from joulebench.results.store import ResultStore
from support.schemas import MISSING, assert_refused


def _run(loaded, prompts, forced, method, store=None):
    config = ProfileConfig(
        model="test",
        batch_size=2,
        method=method,
        warmup=1,
        min_window_s=0.05,
        min_repeats=2,
        max_repeats=2,
        ci_target=0.5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JoulebenchWarning)  # consistency is not checked here
        return profile_cell(
            loaded,
            prompts,
            config,
            FakeMeter(80.0, update_period_s=0.01),
            store=store,
            idle=IdleBaseline({"gpu:0": 30.0}, 1.0),
            hardware=given_peak(100.0, 20.0),
            output_length=forced(),
        )


@pytest.mark.parametrize("method", ["direct", "subtraction", "both"])
def test_every_method_writes_what_the_type_declares(tiny_loaded, prompts, forced, method):
    r = _run(tiny_loaded, prompts, forced, method)
    assert validate_cell_result(r) is r
    assert ("consistency" in r) == (method == "both")
    assert ("generate" in r) == (method != "direct")
    assert r["headline_method"] == ("subtraction" if method == "subtraction" else "direct")


def test_the_stored_result_reads_back_as_the_same_type(tiny_loaded, prompts, forced, tmp_path):
    with ResultStore(tmp_path / "r.duckdb") as store:
        r = _run(tiny_loaded, prompts, forced, "both", store=store)
        row = store.query("SELECT result FROM cells")[0]["result"]
    stored = json.loads(row) if isinstance(row, str) else row
    validate_cell_result(stored)
    assert r["run_id"] and stored["cell_key"] == r["cell_key"]


def test_the_declarations_refuse_an_undeclared_key_or_a_wrong_type(tiny_loaded, prompts, forced):
    r = _run(tiny_loaded, prompts, forced, "both")
    assert_refused(validate_cell_result, r, ("consistency", "gap_rel"), 0.1)
    assert_refused(validate_cell_result, r, ("prefill", "repeats"), "three")
    assert_refused(validate_cell_result, r, ("audit",), MISSING)
