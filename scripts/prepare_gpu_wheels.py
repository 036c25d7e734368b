"""Download the wheels the GPU machine lacks into ``.gpu/wheels/<group>/`` (git-ignored).

    python scripts/prepare_gpu_wheels.py            # every group of gpu_checks_plan.WHEELS
    python scripts/prepare_gpu_wheels.py --group quant

The GPU machine has Python 3.12 and no network, so these are cp312 manylinux x86_64 wheels,
downloaded without dependencies (each needed one is pinned in the list). Afterwards
``python scripts/gpu_checks.py --plan --json`` prints the device calls that carry them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_checks_plan import ROOT, WHEELS, WHEELS_DIR, missing_wheels, wheel_name

PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_28_x86_64",
)  # bitsandbytes 0.50.2 is manylinux_2_24 only


def download_command(requirement: str, dest: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
           "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    return [*cmd, "-d", str(dest), requirement]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", choices=sorted(WHEELS), help="default: all")
    ap.add_argument("--dir", type=Path, default=ROOT / WHEELS_DIR, help="wheel folders' parent")
    args = ap.parse_args(argv)
    failed = []
    for group in args.group or list(WHEELS):
        dest = args.dir / group
        dest.mkdir(parents=True, exist_ok=True)
        for requirement in missing_wheels(args.dir, group):
            print(f"[prepare] {group}: {requirement}", file=sys.stderr, flush=True)
            if subprocess.run(download_command(requirement, dest)).returncode != 0:
                failed.append(requirement)
        extra = sorted(p.name for p in dest.glob("*.whl")
                       if not any(p.name.lower().startswith(w) for w in _stems(group)))  # fmt: skip
        if extra:  # two versions of one package stop the whole install there
            print(f"[prepare] {group}: remove wheels not in the list: {extra}", file=sys.stderr)
            failed += extra
    if failed:
        print(f"[prepare] not ready: {failed}", file=sys.stderr)
        return 1
    print(f"[prepare] wheels ready under {args.dir}", file=sys.stderr)
    return 0


def _stems(group: str) -> list[str]:
    return [wheel_name(r) + "-" for r in WHEELS[group]]


if __name__ == "__main__":
    sys.exit(main())
