"""The device calls of ``scripts/gpu_checks.py --plan``: wheels, carry sizes, commands, limits.

The GPU machine (one H200, Python 3.12, torch 2.11, transformers 5.17, no network) lacks
pydantic, fastapi/starlette/uvicorn and bitsandbytes; they travel as cp312 manylinux wheels that
``scripts/prepare_gpu_wheels.py`` downloads into ``.gpu/wheels/<group>/`` (git-ignored). Each call
installs its wheels into ``.gpu/site`` with ``pip --target`` and runs the kit with
``PYTHONPATH=.gpu/site:src``: joulebench runs from the source tree, nothing is pip-installed.

Each call carries everything it needs (the small ``core`` group goes with both), so the second
call does not depend on the machine staying warm between them. DuckDB is not carried: the kit
reads every figure from the ``--json`` output of joulebench's API and CLI, never from a store.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEELS_DIR = Path(".gpu/wheels")  # relative to the repository root; in .gitignore
SITE_DIR = ".gpu/site"
RESULTS_DIR = ".gpu/results"

#: Wheels per group, pinned to what the tests here run with (cp312 manylinux x86_64 builds).
WHEELS: dict[str, tuple[str, ...]] = {
    "core": (
        "pydantic==2.14.4",
        "pydantic-core==2.50.5",
        "annotated-types==0.8.0",
        "typing-inspection==0.4.5",
        "typing-extensions==4.16.0",
        "fastapi==0.165.0",
        "starlette==1.10.0",
        "uvicorn==0.55.0",
        "h11==0.16.0",
        "annotated-doc==0.0.7",
        "opentelemetry-api==1.45.2",
    ),
    "quant": ("bitsandbytes==0.50.2",),
}

MIB = 2**20
MAX_CALLS = 2
MAX_COMMAND_CHARS = 2000
MAX_CARRY_BYTES = 60 * MIB  # the tool allows 64 MiB; keep a margin
MAX_TOTAL_LIMIT_S = 660
MAX_CALL_LIMIT_S = 600
MAX_CARRY_PATHS = 8


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One device call: which steps it runs, which wheel groups it carries, its limit."""

    number: int
    steps: tuple[str, ...]
    groups: tuple[str, ...]
    limit_s: int


#: Call 1 holds what needs bitsandbytes (the precision phases) and the NVML checks; call 2 the
#: batching and serving studies. Limits: the steps' own limits plus pip, header and packing.
CALLS: tuple[CallSpec, ...] = (
    CallSpec(1, ("nvml", "phases"), ("core", "quant"), 420),
    CallSpec(2, ("batching", "serving"), ("core",), 240),
)


class PlanError(Exception):
    """The plan cannot be made (wheels missing) or breaks a limit; the message says what to do."""


def wheel_name(requirement: str) -> str:
    """The file-name stem prefix of a pinned requirement: ``pydantic-core==2.50.5`` →
    ``pydantic_core-2.50.5``."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"


def missing_wheels(wheels_dir: Path, group: str) -> list[str]:
    """Pinned requirements of ``group`` with no matching ``.whl`` in ``wheels_dir/group``."""
    folder = wheels_dir / group
    have = [p.name.lower() for p in folder.glob("*.whl")] if folder.is_dir() else []
    return [r for r in WHEELS[group] if not any(h.startswith(wheel_name(r) + "-") for h in have)]


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the working tree that travels: tracked plus untracked files git does not ignore."""
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for name in filter(None, out.decode().split("\0")):
        path = root / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def command(call: CallSpec) -> str:
    """The shell command of one call, run in the repository root on the device machine."""
    wheels = " ".join(f"{WHEELS_DIR.as_posix()}/{g}/*.whl" for g in call.groups)
    n = call.number
    return (
        f'export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/{SITE_DIR}:$PWD/src" HF_HUB_OFFLINE=1 '
        "TOKENIZERS_PARALLELISM=false; "
        f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
        f'--target {SITE_DIR} {wheels} > "$OUT/pip-call{n}.log" 2>&1 '
        f'|| echo "pip install failed: see pip-call{n}.log"; '
        f"python3 scripts/gpu_checks.py --call {n} --out {RESULTS_DIR} "
        f'--pack "$OUT" 2>&1 | tee "$OUT/call{n}.log"'
    )


def build_plan(
    wheels_dir: Path | None = None, *, root: Path = ROOT, tree: int | None = None
) -> dict[str, Any]:
    """The device calls, each with its command, carry (paths relative to ``root``), carry bytes
    (the wheel files plus the working tree) and limit. Raises :class:`PlanError`."""
    wheels_dir = (root / WHEELS_DIR) if wheels_dir is None else wheels_dir
    missing = {g: m for g in WHEELS if (m := missing_wheels(wheels_dir, g))}
    if missing:
        listed = "; ".join(f"{g}: {', '.join(m)}" for g, m in missing.items())
        raise PlanError(
            f"wheel folders under {wheels_dir} are not prepared ({listed}). Run "
            "`python scripts/prepare_gpu_wheels.py` (pip download of cp312 manylinux wheels; "
            "needs PyPI), then `python scripts/gpu_checks.py --plan --json` again"
        )
    tree = tree_bytes(root) if tree is None else tree
    calls: list[dict[str, Any]] = []
    for call in CALLS:
        folders = [wheels_dir / g for g in call.groups]
        try:
            carry = [f.resolve().relative_to(root.resolve()).as_posix() for f in folders]
        except ValueError:
            raise PlanError(f"{wheels_dir} must lie inside the repository {root}") from None
        calls.append(
            {
                "call": call.number,
                "steps": list(call.steps),
                "command": command(call),
                "carry": carry,
                "carry_bytes": tree + sum(folder_bytes(f) for f in folders),
                "limit_s": call.limit_s,
            }
        )
    plan: dict[str, Any] = {"calls": calls, "tree_bytes": tree}
    problems = check_plan(plan)
    if problems:
        raise PlanError("the plan breaks the device limits: " + "; ".join(problems))
    return plan


def check_plan(plan: dict[str, Any]) -> list[str]:
    """Every device limit the plan breaks (empty: it fits)."""
    calls = list(plan["calls"])
    out = []
    if len(calls) > MAX_CALLS:
        out.append(f"{len(calls)} calls > {MAX_CALLS}")
    total = sum(int(c["limit_s"]) for c in calls)
    if total > MAX_TOTAL_LIMIT_S:
        out.append(f"limits sum to {total} s > {MAX_TOTAL_LIMIT_S} s")
    for c in calls:
        tag = f"call {c['call']}"
        if len(c["command"]) > MAX_COMMAND_CHARS:
            out.append(f"{tag}: command of {len(c['command'])} chars > {MAX_COMMAND_CHARS}")
        if int(c["carry_bytes"]) > MAX_CARRY_BYTES:
            out.append(f"{tag}: carry {c['carry_bytes'] / MIB:.1f} MiB > 60 MiB")
        if len(c["carry"]) > MAX_CARRY_PATHS:
            out.append(f"{tag}: {len(c['carry'])} carry paths > {MAX_CARRY_PATHS}")
        if int(c["limit_s"]) > MAX_CALL_LIMIT_S:
            out.append(f"{tag}: limit {c['limit_s']} s > {MAX_CALL_LIMIT_S} s")
    return out


def call_spec(number: int) -> CallSpec:
    for c in CALLS:
        if c.number == number:
            return c
    raise SystemExit(f"--call {number}: known calls are {', '.join(str(c.number) for c in CALLS)}")
