"""Proving that a typed result's validator refuses what its declarations do not allow."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

#: ``value`` for :func:`assert_refused`: take the key away instead of setting it.
MISSING = object()


def assert_refused(
    validate: Callable[[Any], object], obj: Any, path: tuple[str, ...], value: Any
) -> None:
    """``validate`` refuses a copy of ``obj`` with ``value`` at ``path`` (an undeclared key, a
    wrong type, or with :data:`MISSING` a required key taken away), naming the path."""
    bad = copy.deepcopy(obj)
    parent = bad
    for key in path[:-1]:
        parent = parent[key]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(pydantic.ValidationError, match=re.escape(".".join(path))):
        validate(bad)
