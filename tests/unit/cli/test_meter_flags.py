"""One meter option group: every measuring command takes the same flags, hands its command one
``MeterChoice``, and refuses a flag of a backend that ``--meter`` does not use."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

from joulebench.cli.app import app
from joulebench.cli.meter_options import AUTO_METER, MeterChoice, meter_flags
from joulebench.errors import ConfigError
from joulebench.meters.registry import check_backend_options

MEASURING = ["profile", "sweep", "load", "measure", "serve", "shape-compare", "shape-sweep",
             "reproduce"]  # fmt: skip
GROUP = {"meter", "require_isolated_gpu", "cpu_tdp_w", "cpu_idle_w", "ram_w_per_gb",
         "estimate_scope", "prometheus_url", "codecarbon_country", "replay_path", "fake_power_w",
         "nvml_mode"}  # fmt: skip


@pytest.mark.parametrize("name", MEASURING)
def test_every_measuring_command_takes_the_whole_meter_group(name):
    (info,) = [c for c in app.registered_commands if (c.name or c.callback.__name__) == name]
    params = inspect.signature(info.callback).parameters
    assert params.keys() >= GROUP
    defaults = {k: params[k].default for k in GROUP}
    assert defaults["meter"] == "auto" and defaults["fake_power_w"] == 100.0
    assert defaults["codecarbon_country"] == "FRA" and defaults["nvml_mode"] == "auto"
    # commands that may measure a server in another process pick the estimator's scope
    auto = {"load", "shape-compare", "shape-sweep"}
    assert defaults["estimate_scope"] == ("auto" if name in auto else "process")


def test_a_server_in_another_process_is_measured_by_the_systems_estimator():
    """--url (or a launched engine): the process on the URL's port is measured, the rest
    subtracted; embedded: this process tree; a scope given on the command line is kept."""
    choice = MeterChoice("estimate", {})
    assert choice.for_url(None).options == {
        "estimate_scope": "process",
        "estimate_target_ports": [],
    }
    far = choice.for_url("http://127.0.0.1:8000/v1")
    assert far.options == {"estimate_scope": "system", "estimate_target_ports": [8000]}
    assert choice.for_url("https://example.org").options["estimate_target_ports"] == [443]
    given = MeterChoice("estimate", {"estimate_scope": "process"}).for_url("http://h:9")
    assert given.options == {"estimate_scope": "process", "estimate_target_ports": []}


def _probe_app(seen: dict[str, MeterChoice]) -> typer.Typer:
    probe = typer.Typer()

    @probe.command()
    @meter_flags
    def run(n: int = typer.Option(1, "--n"), meter: MeterChoice = AUTO_METER) -> None:
        seen["choice"] = meter
        seen["n"] = n  # type: ignore[assignment]

    @probe.command()
    def other() -> None:  # a second command keeps typer from flattening the app
        pass

    return probe


def test_the_command_gets_one_choice_with_the_given_options():
    seen: dict[str, MeterChoice] = {}
    r = CliRunner().invoke(
        _probe_app(seen),
        ["run", "--n", "3", "--meter", "replay", "--replay-path", "t.csv",
         "--require-isolated-gpu"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    choice = seen["choice"]
    assert choice.spec == "replay" and choice.require_isolated_gpu
    assert str(choice.options["replay_path"]) == "t.csv" and seen["n"] == 3
    assert choice.flags()["cpu_tdp_w"] is None


def test_a_flag_of_an_unused_backend_is_refused_naming_its_backend():
    seen: dict[str, MeterChoice] = {}
    r = CliRunner().invoke(_probe_app(seen), ["run", "--meter", "fake", "--replay-path", "t.csv"])
    assert r.exit_code != 0 and "choice" not in seen
    assert isinstance(r.exception, ConfigError)
    assert "--replay-path is an option of the replay meter" in str(r.exception)
    assert "--meter fake" in str(r.exception)
    # a default value typed out is still a flag for the wrong backend
    r = CliRunner().invoke(_probe_app(seen), ["run", "--meter", "nvml", "--fake-power-w", "100"])
    assert isinstance(r.exception, ConfigError) and "fake meter" in str(r.exception)


@pytest.mark.parametrize(
    ("spec", "given", "owner"),
    [
        ("auto", ["cpu_tdp_w", "prometheus_url", "nvml_mode"], None),  # auto may use each
        ("auto", ["replay_path"], "replay"),  # never chosen automatically
        ("nvml+rapl", ["gpus", "nvml_mode"], None),
        ("nvml+rapl", ["cpu_tdp_w"], "estimate"),
        ("estimate", ["estimate_scope", "allow_missing_gpu"], None),  # every meter takes the last
        ("prometheus", ["codecarbon_country"], "codecarbon"),
    ],
)
def test_backend_options_are_checked_against_the_registry(spec, given, owner):
    if owner is None:
        check_backend_options(spec, given)
    else:
        with pytest.raises(ConfigError, match=f"of the {owner} meter"):
            check_backend_options(spec, given)


def test_measure_refuses_a_flag_for_another_backend():
    from joulebench.cli.measure import measure

    runner = typer.Typer()
    runner.command()(measure)
    r = CliRunner().invoke(runner, ["--meter", "fake", "--cpu-tdp-w", "65", "--", "true"])
    assert r.exit_code == 2
    assert "--cpu-tdp-w is an option of the estimate meter" in " ".join(r.output.split())
