"""The README's main job (first version): pack, verify and inspect the echo service bundle.

Runs the real CLI (`python -m flowctl ...`) the way a user would, prints what it
says, and exits non-zero as soon as a step fails:

    .venv/bin/python examples/demo.py [--out DIR]

Without --out the bundle goes to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "examples" / "echo"


def flowctl(*args: str | Path) -> str:
    """Run one flowctl command, echo it and its output; exit on failure."""
    argv = [sys.executable, "-m", "flowctl", *map(str, args)]
    print(f"$ flowctl {' '.join(map(str, args))}", flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if proc.stdout:
        print(proc.stdout.rstrip())
    if proc.returncode != 0:
        print(proc.stderr.rstrip(), file=sys.stderr)
        sys.exit(f"demo failed: `flowctl {args[0]}` exited with {proc.returncode}")
    print()
    return proc.stdout


def run(out: Path) -> None:
    if not (ECHO / "service.json").is_file():
        sys.exit(f"demo failed: {ECHO / 'service.json'} is missing")
    packed = json.loads(flowctl("pack", ECHO, "-o", out, "--json"))
    bundle, digest = Path(packed["path"]), packed["sha256"]
    report = json.loads(flowctl("verify", bundle, "--sha256", digest, "--json"))
    flowctl("inspect", bundle)
    if not report.get("ok") or report["sha256"] != digest:
        sys.exit("demo failed: verify did not confirm the bundle digest")
    print(f"demo ok: {bundle.name} ({report['files']} files, sha256 {digest[:16]}...) packed, verified, inspected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the bundle in this directory")
    args = parser.parse_args()
    if args.out is not None:
        run(args.out)
        return
    with tempfile.TemporaryDirectory(prefix="flowctl-demo-") as tmp:
        run(Path(tmp))


if __name__ == "__main__":
    main()
