"""One reading of a pydantic validation error: where the input is wrong and what to fix.

Every user-facing config (meter options, a reproduce plan, a sweep file, the estimate's flags,
a server request body) is a pydantic model. :func:`problems` reads the error the same way for
all of them; :func:`validation_message` writes the message a user reads, naming each location
the way that user wrote it (a YAML key, a CLI flag, an option) through ``name``. The server's
protocol-shaped errors (OpenAI's ``param``) are built from :func:`problems` too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Loc = tuple[int | str, ...]


class HasErrors(Protocol):
    """pydantic's ``ValidationError`` or FastAPI's ``RequestValidationError``."""

    def errors(self) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class Problem:
    """One failed check: ``loc`` in the input, pydantic's error ``kind`` and message."""

    loc: Loc
    kind: str
    msg: str
    input: Any = None

    @property
    def path(self) -> str:
        """``("serving", "n")`` → ``"serving.n"`` (empty at the top level)."""
        return ".".join(str(p) for p in self.loc)

    @property
    def what(self) -> str:
        """The message without pydantic's ``"Value error, "`` prefix (our validators' text)."""
        return self.msg.removeprefix("Value error, ")

    @property
    def type_mismatch(self) -> bool:
        """A wrong type (``int_type``, ``string_type``…), which says less than a broken
        constraint when both are reported for one value (a union's branches)."""
        return self.kind.endswith("_type")


def problems(exc: HasErrors) -> list[Problem]:
    """The errors of ``exc`` in pydantic's order."""
    return [
        Problem(
            loc=tuple(err.get("loc", ())),
            kind=str(err.get("type", "")),
            msg=str(err.get("msg", "invalid value")),
            input=err.get("input"),
        )
        for err in exc.errors()
    ]


def validation_message(
    exc: HasErrors,
    header: str,
    *,
    name: Callable[[str], str] | Mapping[str, str] | None = None,
    top: str = "(top level)",
    known_keys: Callable[[Loc], Sequence[str]] | None = None,
    show_input: bool = False,
    one_per_line: bool = False,
) -> str:
    """``header`` and one ``"<where>: <what to fix>"`` per problem.

    ``name`` turns a dotted path (``top`` at the top level) into what the user wrote (a flag,
    ``key 'x'``); a mapping names some paths and leaves the rest as they are. An unknown key
    lists ``known_keys(parent location)`` when given. ``show_input`` adds ``(got …)`` for
    scalar and list inputs. Problems are joined by ``"; "``, or one per indented line.
    """
    named = _namer(name)
    parts = []
    for p in problems(exc):
        what = p.what
        if p.kind == "extra_forbidden":
            keys = known_keys(p.loc[:-1]) if known_keys is not None else ()
            what = "unknown key" + (f"; known keys: {', '.join(keys)}" if keys else "")
        if show_input and not isinstance(p.input, dict):
            what += f" (got {p.input!r})"
        parts.append(f"{named(p.path or top)}: {what}")
    if one_per_line:
        return "\n  ".join([header, *parts])
    return f"{header}: {'; '.join(parts)}"


def _namer(name: Callable[[str], str] | Mapping[str, str] | None) -> Callable[[str], str]:
    if name is None:
        return str
    if isinstance(name, Mapping):
        table = name
        return lambda path: table.get(path, path)
    return name
