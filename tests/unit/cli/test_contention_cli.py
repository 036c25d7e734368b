"""``--on-contention`` and its parameters reach a sweep's cells (the file's keys, then the flags)."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from joulebench.cli import sweep as sweep_cli

SWEEP = "name: s\nmodels: [tiny]\nbatch_sizes: [1, 2]\non_contention: wait\nquiet_s: 4\n"


def _app() -> typer.Typer:
    app = typer.Typer()
    sweep_cli.register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps "sweep" a sub-command
        pass

    return app


def _dry(tmp_path, *flags: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "s.yaml"
    f.write_text(SWEEP)
    return CliRunner().invoke(_app(), ["sweep", str(f), "--dry-run", "--json", *flags])


def test_file_keys_then_flags_set_the_policy_and_keep_the_cell_keys(tmp_path):
    from_file = _dry(tmp_path)
    assert from_file.exit_code == 0, from_file.output
    cells = json.loads(from_file.stdout)["cells"]
    assert {(c["on_contention"], c["quiet_s"]) for c in cells} == {("wait", 4.0)}
    flagged = _dry(tmp_path, "--on-contention", "fail", "--quiet-cores", "0.2")
    assert flagged.exit_code == 0, flagged.output
    cells2 = json.loads(flagged.stdout)["cells"]
    assert {(c["on_contention"], c["quiet_cores"], c["quiet_s"]) for c in cells2} == {
        ("fail", 0.2, 4.0)
    }
    # how busy neighbours are handled is not what a cell is: a resumed sweep skips done cells
    assert [c["cell_key"] for c in cells] == [c["cell_key"] for c in cells2]


def test_an_unknown_mode_lists_the_known_ones(tmp_path):
    bad = _dry(tmp_path, "--on-contention", "ignore")
    assert bad.exit_code == 2
    assert "flag, wait, fail" in bad.output or "fail, flag, wait" in bad.output
