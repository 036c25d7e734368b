"""Shared CLI plumbing: the rich console, logging setup, error → exit code translation, and the
signature rewrite behind the option-group decorators (``@meter_flags``, ``@engine_flags``,
``@contention_flags``; :func:`flag_group` makes one from a dataclass of flags)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_type_hints

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from joulebench.errors import JoulebenchError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


#: Libraries whose import-time warnings (missing optional kernels, no triton) say nothing about
#: the user's run; shown with --verbose only.
NOISY_LIBRARIES = ("bitsandbytes", "torchao", "torch.utils._pytree")


def panel_option(panel: str) -> Callable[..., Any]:
    """``typer.Option`` with its flags shown under the ``panel`` heading of ``--help``: what each
    option group (meter, engine, contention) makes its flags with."""
    return functools.partial(typer.Option, rich_help_panel=panel)


def expand_parameter(
    command: Callable[..., Any], name: str, flags: Sequence[tuple[str, Any, Any]], what: str
) -> inspect.Signature:
    """``command``'s signature with its ``name`` parameter replaced by one keyword-only parameter
    per flag (``(name, annotation, default)``) and every other parameter made keyword-only: what an
    option-group decorator hands typer in place of the one bundled parameter."""
    signature = inspect.signature(command, eval_str=True)
    if name not in signature.parameters:
        raise TypeError(f"{command.__name__} has no '{name}' parameter for the {what}")
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if p.name == name:
            params += [
                inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                for n, a, d in flags
            ]
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    return signature.replace(parameters=params)


def flag_group(bundle: type[Any], name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The decorator that gives a command the flags of ``bundle`` in place of its ``name``
    parameter, which then receives them as one ``bundle``.

    ``bundle`` is a dataclass whose fields are the flags: each annotated with its option
    (``Annotated[..., typer.Option(...)]``) and defaulting to its flag's default, so the group is
    declared once and ``--help`` lists it where the ``name`` parameter stands."""
    fields = dataclasses.fields(bundle)
    odd = [f.name for f in fields if f.default is dataclasses.MISSING or not f.init]
    if odd:  # a flag needs a plain default, and every field must come from a flag
        raise TypeError(f"{bundle.__name__}: fields without a plain default: {', '.join(odd)}")
    hints = get_type_hints(bundle, include_extras=True)
    flags = [(f.name, hints[f.name], f.default) for f in fields]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = expand_parameter(command, name, flags, f"{bundle.__name__} flags")

        @functools.wraps(command)
        def wrapper(*args: Any, **kw: Any) -> Any:
            given = bundle(**{n: kw.pop(n, default) for n, _, default in flags})
            return command(*args, **{name: given}, **kw)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return wrapper

    return decorate


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn :class:`JoulebenchError` into a one-line message and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JoulebenchError as exc:
            raise fail(str(exc), exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``: strict JSON has no NaN, and
    a number that could not be computed is reported as absent, never as a made-up value."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """Machine-readable output goes to stdout alone, one object (strict JSON: NaN → null)."""
    sys.stdout.write(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()
