"""The ``joulebench`` command: one Typer app, one module per command."""

from __future__ import annotations

import importlib

import typer

from joulebench._version import __version__
from joulebench.cli.common import setup_logging
from joulebench.cli.meter_options import add_gpu_options

app = typer.Typer(
    name="joulebench",
    help="Measure, explain and cut the energy of LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module exposes ``register(app)``; listed here so the command set is explicit.
COMMAND_MODULES = (
    "joulebench.cli.env",
    "joulebench.cli.measure",
    "joulebench.cli.results",
    "joulebench.cli.load",
    "joulebench.cli.profile",
    "joulebench.cli.sweep",
    "joulebench.cli.estimate",
    "joulebench.cli.report",
    "joulebench.cli.serve",
    "joulebench.cli.shape",
    "joulebench.cli.models",
    "joulebench.cli.prompts",
    "joulebench.cli.reproduce",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"joulebench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging on stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    setup_logging(verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
add_gpu_options(app)  # --gpus and --allow-missing-gpu on every command that takes --meter


def main() -> None:
    app()
