"""Option groups made from a dataclass of flags (``flag_group``): ``load``'s embedded server and
report flags, ``sweep``'s executor flags."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from joulebench.cli.common import flag_group
from joulebench.cli.load_options import EMBEDDED_SERVER, EmbeddedServerFlags
from joulebench.cli.sweep import ExecutorFlags
from joulebench.errors import ConfigError

ColourOpt = Annotated[str | None, typer.Option("--colour")]
SizeOpt = Annotated[int, typer.Option("--size", min=1)]


@dataclass(frozen=True, slots=True)
class Paint:
    colour: ColourOpt = None
    size: SizeOpt = 3


def test_the_group_stands_where_its_parameter_was_and_reaches_the_command_bundled():
    seen: list[Any] = []

    @flag_group(Paint, "paint")
    def draw(name: str = "x", paint: Paint = Paint(), loud: bool = False) -> None:
        seen.append((name, paint, loud))

    params = inspect.signature(draw).parameters
    assert list(params) == ["name", "colour", "size", "loud"]
    assert params["size"].default == 3
    app = typer.Typer()
    app.command("draw")(draw)
    app.command("noop")(lambda: None)  # a second command keeps "draw" a sub-command
    runner = CliRunner()
    assert runner.invoke(app, ["draw", "--colour", "red", "--loud"]).exit_code == 0
    assert runner.invoke(app, ["draw", "--size", "0"]).exit_code == 2  # the option's own check
    assert seen == [("x", Paint("red", 3), True)]


def test_a_command_without_the_parameter_is_refused():
    with pytest.raises(TypeError, match="no 'paint' parameter for the Paint flags"):
        flag_group(Paint, "paint")(lambda name: None)


def test_embedded_server_settings_are_the_defaults_with_what_was_given():
    assert EmbeddedServerFlags().settings(None, False) == EMBEDDED_SERVER
    given = EmbeddedServerFlags(scheduler="sequential", device="cpu")
    assert given.settings(None, False) == {**EMBEDDED_SERVER, "scheduler": "sequential",
                                           "device": "cpu"}  # fmt: skip
    assert given.settings("http://h:1", True)["scheduler"] == "sequential"  # --embedded wins
    assert EmbeddedServerFlags().settings("http://h:1", False) == EMBEDDED_SERVER
    with pytest.raises(ConfigError, match=r"^--scheduler, --device configure the embedded server"):
        given.settings("http://h:1", False)


def test_ray_flags_need_the_ray_executor(monkeypatch):
    from joulebench.profile import fanout

    made: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(fanout, "make_executor", lambda name, **kw: made.append((name, kw)))
    assert ExecutorFlags().make("cpu") is None and made == []
    ExecutorFlags("local").make("cpu")
    ExecutorFlags(" Ray ").make("cuda:1")
    ExecutorFlags("ray", "head:6379", 0.5, 2.0).make("cpu")
    ExecutorFlags("ray").make("cpu")
    assert made == [
        ("local", {}),
        ("ray", {"address": None, "gpus_per_cell": 1.0, "cpus_per_cell": 1.0}),
        ("ray", {"address": "head:6379", "gpus_per_cell": 0.5, "cpus_per_cell": 2.0}),
        ("ray", {"address": None, "gpus_per_cell": 0.0, "cpus_per_cell": 1.0}),
    ]
    with pytest.raises(ConfigError, match=r"^--ray-address, --cpus-per-cell need\(s\) --executor"):
        ExecutorFlags("local", ray_address="h:1", cpus_per_cell=1.0).make("cpu")
    with pytest.raises(ConfigError, match=r"^--gpus-per-cell need\(s\) --executor ray"):
        ExecutorFlags(gpus_per_cell=1.0).make("cpu")


def test_a_group_whose_field_has_no_plain_default_is_refused_when_declared():
    from dataclasses import field

    @dataclass
    class NoDefault:
        name: str

    @dataclass
    class Factory:
        names: list[str] = field(default_factory=list)

    for bundle in (NoDefault, Factory):
        with pytest.raises(TypeError, match="without a plain default"):
            flag_group(bundle, "group")
