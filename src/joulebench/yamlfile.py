"""Read a user's YAML file (sweep, reproduce plan) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from joulebench.errors import ConfigError


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse ``path``; an unreadable file or invalid YAML is a :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
