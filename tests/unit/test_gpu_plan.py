"""``scripts/gpu_checks.py --plan``: the device calls fit the GPU window's limits.

The wheel folders are fakes in a tmp repository root (files of chosen sizes); the carry sizes are
computed from those files plus the working tree, never assumed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import gpu_checks_plan as plan_mod  # noqa: E402

MIB = 2**20


def fake_wheels(root: Path, sizes: dict[str, int] | None = None) -> Path:
    """One ``.whl`` per pinned requirement under ``root/.gpu/wheels/<group>``; sizes by name."""
    sizes = sizes or {}
    wheels = root / ".gpu" / "wheels"
    for group, reqs in plan_mod.WHEELS.items():
        (wheels / group).mkdir(parents=True, exist_ok=True)
        for req in reqs:
            path = wheels / group / f"{plan_mod.wheel_name(req)}-py3-none-any.whl"
            with path.open("wb") as f:
                f.truncate(sizes.get(req.split("==")[0], 100_000))
    return wheels


def test_plan_fits_the_window(tmp_path):
    # the wheel sizes, and the real working tree's size
    wheels = fake_wheels(tmp_path, {"bitsandbytes": 43_000_000, "pydantic-core": 2_300_000})
    tree = plan_mod.tree_bytes()
    plan = plan_mod.build_plan(wheels, root=tmp_path, tree=tree)
    calls = plan["calls"]
    assert 1 <= len(calls) <= 2
    assert sum(c["limit_s"] for c in calls) <= 660
    core = sum(p.stat().st_size for p in (wheels / "core").iterdir())
    quant = sum(p.stat().st_size for p in (wheels / "quant").iterdir())
    for c in calls:
        assert len(c["command"]) <= 2000
        assert c["carry_bytes"] <= 60 * MIB
        expected = tree + core + (quant if ".gpu/wheels/quant" in c["carry"] else 0)
        assert c["carry_bytes"] == expected
        assert all(not Path(p).is_absolute() for p in c["carry"])
        for group in c["carry"]:  # every carried folder is installed by that call's command
            assert f"{group}/*.whl" in c["command"]
        assert '--pack "$OUT"' in c["command"] and f"--call {c['call']}" in c["command"]
    # bitsandbytes goes where the quantized precisions run
    quant_call = next(c for c in calls if ".gpu/wheels/quant" in c["carry"])
    assert "phases" in quant_call["steps"]
    assert sorted(s for c in calls for s in c["steps"]) == sorted(
        ["nvml", "phases", "batching", "serving"]
    )


def test_tree_bytes_counts_untracked_files(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/.gpu/\n")
    (tmp_path / "a.txt").write_bytes(b"x" * 1000)
    fake_wheels(tmp_path)  # ignored: never counted as tree
    assert plan_mod.tree_bytes(tmp_path) == 1000 + len("/.gpu/\n")


def test_oversized_carry_is_refused(tmp_path):
    wheels = fake_wheels(tmp_path, {"bitsandbytes": 59 * MIB})
    with pytest.raises(plan_mod.PlanError, match="60 MiB"):
        plan_mod.build_plan(wheels, root=tmp_path, tree=2 * MIB)


def test_missing_wheels_say_how_to_prepare(tmp_path):
    wheels = fake_wheels(tmp_path)
    next((wheels / "quant").iterdir()).unlink()
    with pytest.raises(plan_mod.PlanError, match=r"bitsandbytes==.*prepare_gpu_wheels\.py"):
        plan_mod.build_plan(wheels, root=tmp_path, tree=0)


def test_plan_cli_exits_non_zero_without_wheels(tmp_path):
    p = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_checks.py"), "--plan", "--json", "--wheels",
         str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2
    assert "prepare_gpu_wheels.py" in p.stderr and not p.stdout.strip()


def test_plan_cli_prints_the_calls_as_json(tmp_path):
    repo = SCRIPTS.parent
    wheels = fake_wheels(repo / ".gpu" / "test-wheels-plan")
    try:
        p = subprocess.run(
            [sys.executable, str(SCRIPTS / "gpu_checks.py"), "--plan", "--json", "--wheels",
             str(wheels)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        import shutil

        shutil.rmtree(repo / ".gpu" / "test-wheels-plan")
    assert p.returncode == 0, p.stderr
    calls = json.loads(p.stdout)["calls"]
    assert [set(c) >= {"command", "carry", "carry_bytes", "limit_s"} for c in calls] == [
        True
    ] * len(calls)
    assert calls[0]["carry"][0].startswith(".gpu/test-wheels-plan/")
