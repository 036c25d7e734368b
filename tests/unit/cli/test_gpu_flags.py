"""--gpus and --allow-missing-gpu reach every command that takes --meter, and its meter."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from joulebench.cli import meter_options
from joulebench.cli.app import app
from joulebench.cli.meter_options import MeterOpt, add_gpu_options, open_cli_meter

MEASURING = [
    "profile",
    "sweep",
    "load",
    "measure",
    "serve",
    "shape-compare",
    "shape-sweep",
    "reproduce",
]


def command_names(typer_app: typer.Typer) -> dict[str, object]:
    return {(c.name or c.callback.__name__): c for c in typer_app.registered_commands}


@pytest.mark.parametrize("name", MEASURING)
def test_every_measuring_command_has_the_gpu_flags(name):
    import inspect

    callback = command_names(app)[name].callback
    params = inspect.signature(callback).parameters
    assert "meter" in params and {"gpus", "allow_missing_gpu"} <= params.keys()


def test_flags_reach_the_meter(monkeypatch):
    seen: dict[str, object] = {}

    class Opened:
        def __init__(self) -> None:
            self.name, self.domains = "x", {}

        def close(self):
            pass

    def fake_open(spec, **options):
        seen.update(spec=spec, **options)
        return Opened()

    monkeypatch.setattr(meter_options, "open_meter", fake_open)
    local = typer.Typer()

    @local.command("run")
    def run(meter: MeterOpt = "auto", cpu_tdp_w: float | None = None) -> None:
        open_cli_meter(meter, cpu_tdp_w=cpu_tdp_w)

    @local.command("other")
    def other() -> None:  # no --meter: no GPU flags
        pass

    add_gpu_options(local)
    runner = CliRunner()
    result = runner.invoke(
        local, ["run", "--meter", "nvml", "--gpus", "3,5", "--allow-missing-gpu"]
    )
    assert result.exit_code == 0, result.output
    assert seen == {"spec": "nvml", "cpu_tdp_w": None, "gpus": "3,5", "allow_missing_gpu": True}
    seen.clear()
    assert runner.invoke(local, ["run"]).exit_code == 0
    assert seen["gpus"] is None and seen["allow_missing_gpu"] is False
    assert runner.invoke(local, ["other", "--gpus", "0"]).exit_code != 0
