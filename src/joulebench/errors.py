"""Exceptions and warnings shared by every part of joulebench.

Vendor errors (NVML, powercap, HTTP) are translated into these at the boundary, so that the CLI
can print one clear message and choose the exit code.
"""

from __future__ import annotations


class JoulebenchError(Exception):
    """Base class for errors joulebench reports to the user."""

    exit_code = 1


class ConfigError(JoulebenchError):
    """User input (a flag, a YAML file, a prompt file) is invalid; the message says what to fix."""

    exit_code = 2


class MissingExtra(JoulebenchError):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = 2

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"'{module}' is needed{what} but is not installed: pip install 'joulebench[{extra}]'"
        )


class MeterUnavailable(JoulebenchError):
    """A meter backend cannot measure on this machine; the message says why and how to enable it."""

    exit_code = 2


class UnknownName(ConfigError):
    """A name chosen from a registry (meter, scheduler, arrival process…) is not known."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(self.known)}")


class StoreError(JoulebenchError):
    """The results store cannot be opened or written."""

    exit_code = 2


class JoulebenchWarning(UserWarning):
    """A measurement caveat that must reach the user (and fails the test-suite if unexpected)."""


def at_least(value: float, floor: int, what: str, *, error: type[Exception] = ConfigError) -> None:
    """Refuse ``value`` below ``floor``: ``error("<what> must be ≥ <floor>, got <value>")``.

    ``error`` is :class:`ConfigError` for what a user gave (a flag, a file) and ``ValueError``
    for a programming mistake in a caller.
    """
    if value < floor:
        raise error(f"{what} must be ≥ {floor}, got {value}")


def positive(value: float, what: str, *, error: type[Exception] = ConfigError) -> None:
    """Refuse ``value`` that is not > 0 (NaN included): ``"<what> must be > 0, got <value>"``."""
    if not value > 0:
        raise error(f"{what} must be > 0, got {value}")
