"""What the typed result declarations share (:mod:`~joulebench.results.cell`,
:mod:`~joulebench.results.load_summary`, :mod:`~joulebench.results.shaping`).

They are ``TypedDict``\\ s, so a result stays the plain mapping the JSON, the store and the report
read while mypy checks each key where it is written and read. :data:`closed` marks a declaration
whose keys are all named (pydantic refuses any other); :func:`check` holds a real object to a
declaration at run time.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar, cast

from pydantic import ConfigDict, TypeAdapter, with_config

T = TypeVar("T")

#: Class decorator: pydantic refuses keys the TypedDict does not declare.
closed = with_config(ConfigDict(extra="forbid"))


@functools.cache
def _adapter(declared: Any) -> TypeAdapter[Any]:
    return TypeAdapter(declared)


def check(declared: type[T], obj: object) -> T:
    """``obj`` checked against the TypedDict ``declared``, every nested section included; a key
    the declarations do not name, or a value of the wrong type, raises pydantic's
    ``ValidationError``. Returns ``obj`` itself, typed."""
    _adapter(cast(Any, declared)).validate_python(obj)
    return cast(T, obj)
