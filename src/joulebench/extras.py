"""Import optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from joulebench.errors import MissingExtra


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming ``joulebench[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module, extra, purpose) from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it twice)."""
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True
