"""The curated public API: every exported name resolves, and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import joulebench


def test_every_exported_name_resolves():
    missing = [name for name in joulebench.__all__ if getattr(joulebench, name, None) is None]
    assert missing == []


def test_unknown_attribute_is_an_attribute_error():
    try:
        joulebench.not_a_thing  # noqa: B018
    except AttributeError as exc:
        assert "not_a_thing" in str(exc)
    else:  # pragma: no cover - the assertion above is the test
        raise AssertionError("expected AttributeError")


def test_import_does_not_pull_heavy_dependencies():
    code = (
        "import sys, joulebench, joulebench.cli.app; "
        "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
