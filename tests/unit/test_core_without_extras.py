"""The core imports and runs without any extra; a missing extra is named in the error."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCKER = """
import sys, importlib.abc
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f"No module named {{name!r}} (blocked by test)")
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = ['joulebench', *{args!r}]
from joulebench.cli.app import main
main()
"""

EXTRAS = [
    "torch",
    "transformers",
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "matplotlib",
    "jinja2",
    "pynvml",
    "codecarbon",
    "bitsandbytes",
    "torchao",
]


def run_blocked(*args: str, blocked=EXTRAS) -> subprocess.CompletedProcess[str]:
    code = BLOCKER.format(blocked=list(blocked), args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_env_and_help_work_without_extras():
    assert run_blocked("--help").returncode == 0
    proc = run_blocked("env", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"estimate"' in proc.stdout


def test_measure_works_without_extras(tmp_path):
    proc = run_blocked(
        "measure", "--meter", "estimate", "--json", "--", sys.executable, "-c", "pass"
    )
    assert proc.returncode == 0, proc.stderr
    assert '"estimated"' in proc.stdout


@pytest.mark.parametrize(
    ("args", "blocked", "extra"),
    [
        (["serve", "--model", "tiny", "--port", "0"], EXTRAS, "serve"),
        (["serve", "--model", "tiny", "--port", "0"], ["torch"], "hf"),
        (["serve", "--model", "tiny", "--port", "0"], ["fastapi", "uvicorn"], "serve"),
        (["serve", "--model", "tiny", "--port", "0"], ["prometheus_client"], "serve"),
        (["models", "make-tiny", "{tmp}/m"], EXTRAS, "hf"),
        (["report", "{tmp}/none.duckdb", "--out", "{tmp}/r"], EXTRAS, None),
        (["report", "{tmp}/none.duckdb", "--out", "{tmp}/r"], ["jinja2"], "report"),
    ],
)
def test_missing_extra_is_named(tmp_path, args, blocked, extra):
    args = [a.format(tmp=tmp_path) for a in args]
    proc = run_blocked(*args, blocked=blocked)
    assert proc.returncode != 0
    if extra is not None:
        assert f"joulebench[{extra}]" in proc.stderr.replace("\n", ""), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
